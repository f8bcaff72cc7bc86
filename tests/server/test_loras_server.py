"""LoRAs through the REST faces: A1111's prompt tag, the native `loras` field, the museum and
OpenAI faces' prompts; an unknown LoRA is refused at submission."""

from __future__ import annotations

import json
import time

import pytest


@pytest.fixture(scope="module")
def srv_lora(server):
    from bildwerk.models.tiny import build_tiny_pipeline
    from bildwerk.models.tiny_lora import save_tiny_lora

    save_tiny_lora(server.root / "home" / "loras" / "srvlora.safetensors", build_tiny_pipeline("sd"))
    return "srvlora"


def test_a1111_prompt_tag_is_applied_and_kept_in_the_infotext(server, srv_lora):
    with server.client() as c:
        body = {"prompt": f"a red apple <lora:{srv_lora}:0.7>", "seed": 5, "steps": 2, "width": 64, "height": 64}
        r = c.post("/sdapi/v1/txt2img", json=body)
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert f"<lora:{srv_lora}:0.7>" in info["infotexts"][0] and "Lora hashes" in info["infotexts"][0]
        record = c.get(f"/api/v1/jobs/{info['bildwerk_job']}").json()["record"]
        assert record["request"]["loras"] == [{"name": srv_lora, "weight": 0.7}]
        assert record["loras"][0]["name"] == srv_lora and len(record["loras"][0]["hash"]) == 12
        plain = c.post("/sdapi/v1/txt2img", json={**body, "prompt": "a red apple"})
        assert plain.json()["images"][0] != r.json()["images"][0]


def test_native_loras_field_and_unknown_names(server, srv_lora):
    with server.client() as c:
        job = c.post("/api/v1/jobs", json={"prompt": "a red apple", "seed": 5, "steps": 2, "width": 64,
                                           "height": 64, "loras": [{"name": srv_lora, "weight": 0.7}]})
        assert job.status_code == 202, job.text
        deadline = time.time() + 60
        while (row := c.get(f"/api/v1/jobs/{job.json()['id']}").json())["status"] not in ("succeeded", "failed"):
            assert time.time() < deadline
            time.sleep(0.2)
        assert row["status"] == "succeeded", row
        missing = c.post("/api/v1/jobs", json={"prompt": "x", "loras": [{"name": "nosuch"}]})
        assert missing.status_code == 404 and "no LoRA named 'nosuch'" in missing.text
        tagged = c.post("/sdapi/v1/txt2img", json={"prompt": "x <lora:nosuch:1>", "steps": 1})
        assert tagged.status_code == 404
        heavy = c.post("/api/v1/jobs", json={"prompt": "x", "loras": [{"name": srv_lora, "weight": 9}]})
        assert heavy.status_code in (400, 422) and "weight" in heavy.text
        assert srv_lora in [x["name"] for x in c.get("/sdapi/v1/loras").json()]  # what a client offers
