"""bildwerk's own jobs API, operations endpoints and request guards, on a real server."""

from __future__ import annotations

import base64
import csv
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
        batch = ready.json()["batch"]  # on the CPU nothing is measured: the default cells
        assert (batch["cells_from"], batch["max_cells"], batch["memory"]) == ("default", 32 * 64 * 64, None)
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
        assert r.headers["x-bildwerk-job"] == job["id"]
        assert job["warnings"] == []  # the server's model at its own size
        far = c.post("/api/v1/jobs", json={"prompt": "x", "steps": 1, "width": 512, "height": 512})
        assert far.status_code == 202 and "512x512 is far from the model's own" in far.json()["warnings"][0]
        c.post(f"/api/v1/jobs/{far.json()['id']}/cancel")
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
        picture = Image.new("RGB", (64, 64), "orange")
        ids = [c.post("/api/v1/jobs", json={"prompt": p, "steps": 2, **extra}).json()["id"]
               for p, extra in (("a red zebra", {}), ("a blue zebra", {}),
                                ("ein Apfel", {"mode": "image-to-image", "image": png_b64(picture)}))]
        for i in ids:
            assert wait_job(c, i)["status"] == "succeeded"
        page = c.get("/api/v1/jobs", params={"q": "zebra", "status": "succeeded"}).json()
        found = page["jobs"]
        assert {j["id"] for j in found} >= set(ids[:2]) and ids[2] not in {j["id"] for j in found}
        assert page["total"] == len(found)  # the filters' count, not every job's
        assert c.get("/api/v1/models").json()["remote_available"] is False  # no OpenAI key here
        one = c.get("/api/v1/jobs", params={"q": "zebra", "limit": 1}).json()
        assert len(one["jobs"]) == 1 and one["total"] == len(found)
        z = c.get("/api/v1/export", params={"ids": ",".join([*ids[:2], ids[2][:10]])})  # a unique start works too
        assert z.status_code == 200
        folder = server.root / "export-check"
        zipfile.ZipFile(io.BytesIO(z.content)).extractall(folder)
        report = validate_image_folder(folder)
        assert report.ok, report
        rows = (folder / "metadata.csv").read_text("utf-8")
        assert "a red zebra" in rows and "text_de" in rows.splitlines()[0]
        # The web UI's export holds the inputs too, named after their job, beside its result.
        with (folder / "metadata.csv").open(encoding="utf-8", newline="") as f:
            by_job = {r["job_id"]: r for r in csv.DictReader(f)}
        assert by_job[ids[0]]["input_image"] == "" and not by_job[ids[2]].get("input_mask")
        with Image.open(folder / by_job[ids[2]]["input_image"]) as im:
            assert by_job[ids[2]]["input_image"].startswith(f"inputs/{ids[2]}_")
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(picture))
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


def _upload_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


# -- what the web interface uses (issue 16): uploads, the prompt preview, progress previews --
def test_a_multipart_upload_is_a_job_with_its_pictures(server):
    with server.client() as c:
        fields = {"mode": "image-to-image", "prompt": "a watercolor lake", "steps": 2, "seed": 3, "strength": 0.5}
        r = c.post("/api/v1/uploads", data={"request": json.dumps(fields)},
                   files={"image": ("map.png", _upload_png(), "image/png")})
        assert r.status_code == 202, r.text
        assert r.headers["location"].endswith(r.json()["id"])
        job = wait_job(c, r.json()["id"])
        assert job["status"] == "succeeded" and job["mode"] == "image-to-image"
        assert set(job["inputs"]) == {"image"}
        assert c.get(job["inputs"]["image"]["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"
        bad = c.post("/api/v1/uploads", data={"request": "{not json"}, files={"image": ("a.png", _upload_png(), "image/png")})
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
        inline = c.post("/api/v1/uploads", data={"request": json.dumps({"image": "AAAA"})})
        assert inline.status_code == 400 and "file parts" in inline.json()["error"]["message"]
        typo = c.post("/api/v1/uploads", data={"request": json.dumps({"stepz": 2})})
        assert typo.status_code == 400 and "stepz" in typo.json()["error"]["message"]
        junk = c.post("/api/v1/uploads", data={"request": json.dumps(fields)},
                      files={"image": ("a.png", b"not a picture", "image/png")})
        assert junk.status_code == 400 and junk.json()["error"]["code"] == "invalid_image"


def test_the_prompt_preview_shows_the_steps_without_generating(server):
    import base64

    with server.client() as c:
        before = c.get("/api/v1/jobs").json()["total"]
        r = c.post("/api/v1/prompt", json={"prompt": "ein roter Apfel", "prompt_options": {"style": "watercolor"}})
        assert r.status_code == 200, r.text
        out = r.json()
        steps = [s["step"] for s in out["record"]["steps"]]
        assert steps[0] == "language" and out["record"]["language"] == "de" and steps[-1] == "style"
        assert "watercolor" in out["prompt"]
        image = "data:image/png;base64," + base64.b64encode(_upload_png()).decode()
        edited = c.post("/api/v1/prompt", json={"prompt": "make it a watercolor", "image": image,
                                                "prompt_options": {"description": "a blue square"}}).json()
        describe = next(s for s in edited["record"]["steps"] if s["step"] == "describe")
        assert describe["output"] == "a blue square" and describe["backend"] == "user"
        assert "blue square" in edited["prompt"]
        assert c.get("/api/v1/jobs").json()["total"] == before  # nothing was queued
        assert c.post("/api/v1/prompt", json={"prompt": "x", "prompt_options": {"style": "nope"}}).status_code == 400


def test_progress_events_carry_previews_when_asked(server):
    with server.client() as c:
        job = c.post("/api/v1/jobs", json={"prompt": "a lake", "steps": 40, "seed": 1}).json()
        previews, plain = [], []
        with httpx.stream("GET", f"{server.url}/api/v1/jobs/{job['id']}/events", params={"preview": "true"},
                          timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                    if "preview" in data:
                        previews.append(data["preview"])
                    if data.get("status") in ("succeeded", "failed") and "phase" not in data:
                        break
        assert previews and all(p.startswith("data:image/jpeg;base64,") for p in previews)
        assert len(set(previews)) == len(previews)  # each one sent once
        with httpx.stream("GET", f"{server.url}/api/v1/jobs/{job['id']}/events", timeout=60) as r:
            plain = [line for line in r.iter_lines() if line.startswith("data:")]
        assert plain and not any("preview" in json.loads(p[5:]) for p in plain)
