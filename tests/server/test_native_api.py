"""bildwerk's own jobs API, operations endpoints and request guards, on a real server."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import httpx
import numpy as np
from harness.images import png_b64
from harness.server import wait_job
from PIL import Image, ImageDraw

from bildwerk.images.metadata import read_png_metadata


def test_health_ready_metrics(server):
    with server.client() as c:
        assert c.get("/health").json() == {"status": "ok"}
        ready = c.get("/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        metrics = c.get("/metrics").text
        assert "bildwerk_queue_depth" in metrics and "bildwerk_jobs_accepted_total" in metrics
        assert c.get("/openapi.json").json()["info"]["title"] == "bildwerk"


def test_job_lifecycle_events_result_and_record(server):
    with server.client() as c:
        r = c.post("/api/v1/jobs", json={"prompt": "ein See", "seed": 7, "steps": 3, "num_images": 2,
                                         "prompt_options": {"enhance": True}})
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"].endswith(job["id"]) and job["status"] == "queued"
        events = []
        with c.stream("GET", f"/api/v1/jobs/{job['id']}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    events.append(line.split(":", 1)[1].strip())
                if events and events[-1] == "end":
                    break
        assert events[0] == "progress" and events[-1] == "end"
        done = wait_job(c, job["id"])
        assert done["status"] == "succeeded" and [r["seed"] for r in done["results"]] == [7, 8]
        steps = [s["step"] for s in done["record"]["request"]["prompt_record"]["steps"]]
        assert steps == ["language", "translate", "lexicon"]  # tiny SD reads English only
        assert done["record"]["versions"]["torch"] and done["record"]["model"]["name"]
        png = c.get(done["results"][1]["url"])
        assert png.headers["content-type"] == "image/png"
        meta = read_png_metadata(png.content)
        assert meta["parsed"]["Seed"] == 8 and meta["record"]["request"]["prompt_record"]["original"] == "ein See"
        by_hash = c.get(f"/api/v1/images/{done['results'][1]['sha256']}")
        assert by_hash.content == png.content


def test_history_search_delete_and_export(server):
    from bildwerk.train.data import validate_image_folder

    with server.client() as c:
        ids = [c.post("/api/v1/jobs", json={"prompt": p, "steps": 2}).json()["id"]
               for p in ("a red zebra", "a blue zebra", "ein Apfel")]
        for i in ids:
            assert wait_job(c, i)["status"] == "succeeded"
        found = c.get("/api/v1/jobs", params={"q": "zebra", "status": "succeeded"}).json()["jobs"]
        assert {j["id"] for j in found} >= set(ids[:2]) and ids[2] not in {j["id"] for j in found}
        z = c.get("/api/v1/export", params={"ids": ",".join(ids)})
        assert z.status_code == 200
        folder = server.root / "export-check"
        zipfile.ZipFile(io.BytesIO(z.content)).extractall(folder)
        report = validate_image_folder(folder)
        assert report.ok, report
        rows = (folder / "metadata.csv").read_text("utf-8")
        assert "a red zebra" in rows and "text_de" in rows.splitlines()[0]
        assert c.delete(f"/api/v1/jobs/{ids[0]}").status_code == 204
        assert c.get(f"/api/v1/jobs/{ids[0]}").status_code == 404


def test_cancel_queued_job(server):
    with server.client() as c:
        slow = [c.post("/api/v1/jobs", json={"prompt": "x", "steps": 40, "num_images": 2}).json()["id"]
                for _ in range(3)]
        r = c.post(f"/api/v1/jobs/{slow[-1]}/cancel")
        assert r.status_code == 202 and r.json()["status"] in ("cancelled", "cancelling")
        assert wait_job(c, slow[-1])["status"] == "cancelled"
        running = c.post(f"/api/v1/jobs/{slow[0]}/cancel").json()["status"]  # running or already done
        assert running in ("cancelling", "cancelled", "succeeded")
        assert wait_job(c, slow[0])["status"] in ("cancelled", "succeeded")
        assert c.post(f"/api/v1/jobs/{slow[-1]}/cancel").json()["status"] == "cancelled"  # idempotent
        wait_job(c, slow[1])


def test_bad_requests_answer_4xx_with_clear_messages(server):
    with server.client() as c:
        def err(r, status, *words):
            assert r.status_code == status, r.text
            msg = r.json()["error"]["message"]
            for w in words:
                assert w in msg, msg
            return r.json()["error"]["code"]

        assert err(c.post("/api/v1/jobs", json={"prompt": "x", "width": 100}), 400, "multiple of 8") == "invalid_request"
        err(c.post("/api/v1/jobs", json={"prompt": "x", "steps": 0}), 400, "steps")
        err(c.post("/api/v1/jobs", json={"prompt": "x", "colour": "red"}), 400, "colour")
        err(c.post("/api/v1/jobs", json={"mode": "image-to-image", "prompt": "x", "image": "not base64!!"}), 400)
        err(c.post("/api/v1/jobs", json={"mode": "image-to-image", "prompt": "x",
                                         "image": base64.b64encode(b"GIF89a....").decode()}), 400)
        img = png_b64(Image.new("RGB", (64, 64)))
        small = png_b64(Image.new("L", (32, 32)))
        err(c.post("/api/v1/jobs", json={"mode": "inpaint", "prompt": "x", "image": img, "mask": small}), 400,
            "mask is 32x32")
        err(c.post("/api/v1/jobs", json={"prompt": "x", "prompt_options": {"style": "nope"}}), 400, "unknown style")
        err(c.post("/api/v1/jobs", json={"prompt": "x", "model": "/no/such/model"}), 404)
        err(c.post("/api/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}), 400)
        assert c.get("/api/v1/jobs/nope").status_code == 404
        err(c.get("/api/v1/images/../../etc/passwd"), 404)
        err(c.get("/api/v1/images/" + "g" * 64), 400, "sha256")


def test_body_and_pixel_limits(server):
    with server.client() as c:
        big = c.post("/api/v1/jobs", content=b"x" * (49 * 1024 * 1024), headers={"content-type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
        # A small file that declares a huge canvas is refused before decoding.
        buf = io.BytesIO()
        Image.new("1", (8000, 8000)).save(buf, format="PNG")
        r = c.post("/api/v1/jobs", json={"mode": "image-to-image", "prompt": "x",
                                         "image": base64.b64encode(buf.getvalue()).decode()})
        assert r.status_code == 400 and "pixels" in r.json()["error"]["message"]


def test_foreign_origin_refused_but_sdk_calls_pass(server):
    with server.client() as c:
        r = c.post("/api/v1/jobs", json={"prompt": "x"}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        same = c.post("/api/v1/jobs", json={"prompt": "x", "steps": 1},
                      headers={"Origin": server.url})
        assert same.status_code == 202


def test_inpaint_job_keeps_outside_pixels(server):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 40, 40), fill=255)
    with server.client() as c:
        job = c.post("/api/v1/jobs", json={"mode": "inpaint", "prompt": "a lake", "steps": 3,
                                           "image": png_b64(img), "mask": png_b64(mask)}).json()
        done = wait_job(c, job["id"])
        assert done["status"] == "succeeded", done
        out = np.asarray(Image.open(io.BytesIO(c.get(done["results"][0]["url"]).content)).convert("RGB"))
        outside = np.asarray(mask) == 0
        assert np.array_equal(out[outside], np.asarray(img)[outside])
        assert set(done["inputs"]) == {"image", "mask"}
        assert c.get(done["inputs"]["mask"]["url"]).status_code == 200


def test_api_key_required_when_set(tiny_models, tmp_path):
    from harness.server import ServerProcess

    srv = ServerProcess(tmp_path, str(tiny_models["sd"]), api_key="s3cret", warmup=False).start()
    try:
        assert httpx.get(srv.url + "/health").status_code == 200  # probes stay open
        r = httpx.post(srv.url + "/api/v1/jobs", json={"prompt": "x"})
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        assert httpx.get(srv.url + "/api/v1/jobs", headers={"X-API-Key": "wrong"}).status_code == 401
        with srv.client() as c:
            assert c.get("/api/v1/jobs").status_code == 200
    finally:
        srv.stop()


def test_refuses_public_bind_without_key():
    import pytest

    from bildwerk.core.errors import InvalidRequestError
    from bildwerk.server.settings import ServerSettings

    with pytest.raises(InvalidRequestError, match="API key"):
        ServerSettings(host="0.0.0.0").check()
    ServerSettings(host="0.0.0.0", api_key="k").check()
    ServerSettings(host="::1").check()
    assert json.loads(ServerSettings().model_dump_json())["host"] == "127.0.0.1"
