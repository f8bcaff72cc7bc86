"""The museum's "remote" choice: the OpenAI Images API (a loopback stand-in) behind the server."""

from __future__ import annotations

import io

import numpy as np
import openai
import pytest
from fakes.openai_server import FakeOpenAIServer
from harness.images import data_url
from harness.server import ServerProcess, counting_openai_client
from PIL import Image, ImageDraw


def test_museum_remote_model_composites_locally(tiny_models, tmp_path):
    photo = Image.fromarray(np.random.default_rng(9).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).ellipse((30, 30, 70, 70), fill=255)
    with FakeOpenAIServer(required_key="sk-test") as fake:
        srv = ServerProcess(tmp_path, str(tiny_models["sd"]), warmup=False, extra_env={
            "BILDWERK_OPENAI_BASE_URL": fake.base_url, "BILDWERK_OPENAI_API_KEY": "sk-test",
            "BILDWERK_REMOTE_MODEL": "openai:gpt-image-1"}).start()
        try:
            with srv.client() as c:
                assert c.get("/api/v1/models").json()["remote_available"] is True
                r = c.post("/api/v1/museum/inpaint", json={"image": data_url(photo), "mask": data_url(mask),
                                                           "prompt": "ein See", "model": "remote"})
                assert r.status_code == 200, r.text
                out = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
                outside = np.asarray(mask) == 0
                assert np.array_equal(out[outside], np.asarray(photo)[outside])  # exact, despite the remote
                assert not np.array_equal(out[~outside], np.asarray(photo)[~outside])
                job = c.get(f"/api/v1/jobs/{r.headers['x-bildwerk-job']}").json()
                assert job["engine"] == "openai" and job["record"]["model"]["name"] == "openai:gpt-image-1"
                assert any("seed" in n for n in job["record"]["notes"])
            edits = [q for q in fake.requests if q.path.endswith("/images/edits")]
            assert edits and edits[0].form["prompt"]  # the remote model reads German itself
            assert "See" in edits[0].form["prompt"]

            # The operator's key stops working: the job fails (remote_auth, 502), and the answer
            # names the job and tells the official SDK not to retry it (one call, one job).
            fake.required_key = "sk-revoked"
            sdk, sent = counting_openai_client(srv.url)
            with srv.client() as c:
                before = c.get("/api/v1/jobs").json()["total"]
                with pytest.raises(openai.InternalServerError) as exc:
                    sdk.images.generate(model="openai:gpt-image-1", prompt="a lake", size="1024x1024")
                assert len(sent) == 1 and exc.value.response.headers["x-should-retry"] == "false"
                failed = c.get(f"/api/v1/jobs/{exc.value.response.headers['x-bildwerk-job']}").json()
                assert failed["status"] == "failed" and failed["error"]["code"] == "remote_auth"
                a1111 = c.post("/sdapi/v1/txt2img", json={
                    "prompt": "x", "override_settings": {"sd_model_checkpoint": "openai:gpt-image-1"}})
                assert a1111.status_code == 502 and a1111.headers["x-should-retry"] == "false"
                assert a1111.json()["error"]["job"]["id"] == a1111.headers["x-bildwerk-job"]
                assert c.get("/api/v1/jobs").json()["total"] == before + 2
        finally:
            srv.stop()
