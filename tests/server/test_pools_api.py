"""Image pools over REST on a real server (issue 15): create from a plan, review and edit it
(JSON and YAML), start, follow the events to the end, browse by kind and location, fetch a
picture, export the imagefolder, find the pool's jobs in the history, pause and resume, cancel,
bad requests, and a server killed mid-pool that resumes and repeats nothing."""

from __future__ import annotations

import io
import json
import signal
import threading
import time
import zipfile

import httpx
import pytest
import yaml
from harness.server import ServerProcess

from bildwerk.images.metadata import read_png_metadata

POOLS = "/api/v1/pools"
WINDOW = 2  # jobs of one pool in the queue at a time: small, so a pause leaves work undone


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("pools"), str(tiny_models["sd"]),
                        extra_env={"BILDWERK_POOL_WINDOW": str(WINDOW)}).start()
    srv.wait_ready()
    yield srv
    srv.stop()


def plan(name="station", per_prompt=(2, 1, 3), steps=2, **settings) -> dict:
    prompts = [{"prompt": text, "seed": 10 * i + 1, "images": n}
               for i, (text, n) in enumerate(zip(("a station hall", "a ticket office", "a station square",
                                                   "a bus stop"), per_prompt, strict=False))]
    inner, outer = prompts[:2], prompts[2:]
    return {"pool": name, "topic": "Bahnhof", "images": sum(per_prompt),
            "kinds": [{"kind": "interiors", "share": 50, "images": sum(p["images"] for p in inner),
                       "locations": [{"name": "Halle", "prompts": inner}]},
                      {"kind": "exteriors", "share": 50, "images": sum(p["images"] for p in outer),
                       "locations": [{"name": "Vorplatz", "prompts": outer}]}],
            "settings": {"width": 64, "height": 64, "steps": steps, **settings},
            "gates": {"nsfw": False, "dedupe": False}}


def follow(c: httpx.Client, pool_id: str, timeout: float = 120) -> list[tuple[str, dict]]:
    """The pool's server-sent events until its end (or the server's stop)."""
    events: list[tuple[str, dict]] = []
    name = None
    with c.stream("GET", f"{POOLS}/{pool_id}/events", timeout=timeout) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and name:
                events.append((name, json.loads(line.split(":", 1)[1])))
                if name in ("end", "stopping"):
                    break
    return events


def wait_pool(c, pool_id, cond, timeout=120.0, what="the pool"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool = c.get(f"{POOLS}/{pool_id}").json()
        if cond(pool):
            return pool
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {pool}")


def pool_jobs(c, pool_id) -> list[dict]:
    r = c.get("/api/v1/jobs", params={"pool_id": pool_id, "limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["jobs"]


def assert_made_once(c, pool_id, planned: int):
    succeeded = [j for j in pool_jobs(c, pool_id) if j["status"] == "succeeded"]
    items = [j["pool_item"] for j in succeeded]
    assert len(items) == len(set(items)) == planned, items  # every item once, none twice
    accepted = c.get(f"{POOLS}/{pool_id}/images", params={"limit": 500}).json()["images"]
    assert {r["id"] for r in accepted} == set(items)


def err(r, status, *words):
    assert r.status_code == status, r.text
    body = r.json()["error"]
    for w in words:
        assert w in body["message"], body
    return body["code"]


def test_create_review_edit_start_follow_browse_export(server, tmp_path):
    from bildwerk.train.data import validate_image_folder

    with server.client() as c:
        r = c.post(POOLS, json={"plan": plan()})
        assert r.status_code == 201, r.text
        pool = r.json()
        pid = pool["id"]
        assert r.headers["location"] == pool["links"]["self"] and pool["status"] == "draft"
        assert pool["plan"]["pool"] == "station" and pool["target"] == 6 and pool["accepted"] == 0
        assert [k["kind"] for k in pool["kinds"]] == ["interiors", "exteriors"]
        assert any(p["id"] == pid for p in c.get(POOLS).json()["pools"])
        # Review: the plan as JSON and as YAML to edit by hand.
        assert c.get(f"{POOLS}/{pid}/plan").json() == pool["plan"]
        text = c.get(f"{POOLS}/{pid}/plan", params={"format": "yaml"})
        assert text.headers["content-type"].startswith("application/yaml")
        edited = yaml.safe_load(text.text)
        edited["kinds"][0]["locations"][0]["prompts"][0]["prompt"] = "a grand station hall, morning light"
        r = c.put(f"{POOLS}/{pid}/plan", content=yaml.safe_dump(edited, allow_unicode=True).encode(),
                  headers={"content-type": "application/yaml"})
        assert r.status_code == 200, r.text
        assert r.json()["plan"]["kinds"][0]["locations"][0]["prompts"][0]["prompt"].startswith("a grand")
        # A bad edit names its field, and changes nothing.
        bad = json.loads(json.dumps(edited))
        bad["kinds"][1]["images"] = -1
        assert err(c.put(f"{POOLS}/{pid}/plan", json=bad), 400, "kinds.1.images") == "invalid_request"
        bad = {**edited, "images": "6"}
        err(c.put(f"{POOLS}/{pid}/plan", json=bad), 400, "images")
        err(c.put(f"{POOLS}/{pid}/plan", content=b"kinds: [", headers={"content-type": "text/yaml"}), 400, "YAML")
        err(c.put(f"{POOLS}/{pid}/plan", content=b"pool: x", headers={"content-type": "text/plain"}), 400, "YAML")
        err(c.put(f"{POOLS}/{pid}/plan", json={**edited, "settings": {"width": 100}}), 400, "width")
        assert c.get(f"{POOLS}/{pid}/plan").json()["kinds"][1]["images"] == 3
        # Start, and follow it to the end.
        r = c.post(f"{POOLS}/{pid}/start")
        assert r.status_code == 202 and r.json()["status"] == "running", r.text
        assert err(c.post(f"{POOLS}/{pid}/start"), 409, "running") == "pool_state"
        err(c.put(f"{POOLS}/{pid}/plan", json=edited), 409, "running")
        events = follow(c, pid)
        assert events[0][0] == "status" and events[-1] == ("end", {"id": pid, "status": "complete", "error": None})
        pictures = [d for name, d in events if name == "progress" and d["type"] == "image"]
        assert len(pictures) <= 6 and all(d["status"] == "accepted" for d in pictures)
        done = c.get(f"{POOLS}/{pid}").json()
        assert done["status"] == "complete" and not done["active"]
        assert done["accepted"] == 6 and done["jobs"] == {"succeeded": 6}
        assert {k["kind"]: k["accepted"] for k in done["kinds"]} == {"interiors": 3, "exteriors": 3}
        # Browse by kind and location; every row leads to its picture and its job.
        page = c.get(f"{POOLS}/{pid}/images", params={"kind": "interiors", "location": "Halle"}).json()
        assert page["total"] == 3 and {r["kind"] for r in page["images"]} == {"interiors"}
        row = next(r for r in page["images"] if r["prompt"].startswith("a grand"))
        png = c.get(row["url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert read_png_metadata(png.content)["parsed"]["Seed"] == row["seed"]
        job = c.get(f"/api/v1/jobs/{row['job_id']}").json()
        assert (job["pool_id"], job["pool_item"], job["api"]) == (pid, row["id"], "pool")
        assert c.get(f"{POOLS}/{pid}/images", params={"location": "nowhere"}).json()["total"] == 0
        assert c.get(f"{POOLS}/{pid}/images", params={"status": "rejected"}).json()["images"] == []
        two = c.get(f"{POOLS}/{pid}/images", params={"limit": 2, "offset": 5}).json()
        assert two["total"] == 6 and len(two["images"]) == 1
        for bad_id in ("0" * 16, "nope", "..%2f..%2fplan.yaml", "%2e%2e"):
            assert c.get(f"{POOLS}/{pid}/images/{bad_id}").status_code == 404
        # The pool's jobs are in the history.
        jobs = pool_jobs(c, pid)
        assert len(jobs) == 6 and {j["pool_id"] for j in jobs} == {pid}
        assert c.get("/api/v1/jobs", params={"pool_id": pid}).json()["total"] == 6
        # Export: metadata.csv and the accepted pictures, the folder `bildwerk train` reads.
        z = c.get(f"{POOLS}/{pid}/export")
        assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(z.content))
        folder = tmp_path / "pool-export"
        archive.extractall(folder)
        lines = (folder / "metadata.csv").read_text("utf-8").splitlines()
        files = {n for n in archive.namelist() if n.endswith(".png")}
        assert len(lines) == 7 and files == {line.split(",")[0] for line in lines[1:]}
        assert validate_image_folder(folder).ok
        # The report and the contact sheets each run writes when it ends.
        report = c.get(f"{POOLS}/{pid}/report")
        assert report.status_code == 200 and report.headers["content-type"] == "application/json"
        assert report.json()["pool"] == "station" and report.json()["kinds"]["interiors"]["accepted"] == 3
        sheet = c.get(f"{POOLS}/{pid}/sheets/interiors.png")
        assert sheet.status_code == 200 and sheet.content[:4] == b"\x89PNG"
        assert c.get(f"{POOLS}/{pid}/sheets/nokind.png").status_code == 404


def test_pause_then_resume_ends_complete_with_no_item_made_twice(server):
    with server.client() as c:
        pid = c.post(POOLS, json={"plan": plan("pausing", (3, 2, 3), steps=4)}).json()["id"]
        c.post(f"{POOLS}/{pid}/start")
        wait_pool(c, pid, lambda p: p["accepted"] >= 2, what="two pictures")
        r = c.post(f"{POOLS}/{pid}/pause")
        assert r.status_code == 202 and r.json()["status"] == "paused"
        assert err(c.post(f"{POOLS}/{pid}/pause"), 409, "paused") == "pool_state"
        assert follow(c, pid)[-1][1]["status"] == "paused"  # the stream ends once it wound down
        paused = c.get(f"{POOLS}/{pid}").json()
        assert not paused["active"] and paused["accepted"] < 8
        assert set(paused["jobs"]) == {"succeeded"}  # what was queued ran to its end and is kept
        assert paused["accepted"] == paused["jobs"]["succeeded"]
        assert c.post(f"{POOLS}/{pid}/resume").json()["status"] == "running"
        assert follow(c, pid)[-1][1]["status"] == "complete"
        assert_made_once(c, pid, 8)


def test_cancel_stops_the_pool_and_its_queued_jobs(server):
    with server.client() as c:
        pid = c.post(POOLS, json={"plan": plan("cancelled", (4, 4, 4), steps=8)}).json()["id"]
        c.post(f"{POOLS}/{pid}/start")
        wait_pool(c, pid, lambda p: p["accepted"] >= 1, what="a picture")
        r = c.post(f"{POOLS}/{pid}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "cancelled"
        assert follow(c, pid)[-1][1]["status"] == "cancelled"
        done = wait_pool(c, pid, lambda p: not set(p["jobs"]) & {"queued", "running"}, what="its jobs to end")
        assert done["status"] == "cancelled" and done["accepted"] < 12
        for act in ("start", "resume", "pause", "cancel"):
            err(c.post(f"{POOLS}/{pid}/{act}"), 409, "cancelled")


def test_bad_requests_are_clear_4xx_and_make_nothing(server):
    with server.client() as c:
        before = c.get("/api/v1/jobs", params={"api": "pool"}).json()["total"]
        err(c.post(POOLS, json={}), 400, "topic")
        err(c.post(POOLS, json={"topic": "x", "plan": plan()}), 400, "either")
        err(c.post(POOLS, json={"plan": plan(), "images": 3}), 400, "images")
        err(c.post(POOLS, json={"topic": "x", "colour": "red"}), 400, "colour")
        err(c.post(POOLS, json={"topic": "x", "images": "6"}), 400, "images")
        err(c.post(POOLS, json={"topic": "x", "images": 0}), 400, "images")
        err(c.post(POOLS, json={"topic": "a\x00b"}), 400)
        err(c.post(POOLS, json={"topic": "x", "mix": {"interiors": -1}}), 400, "mix")
        err(c.post(POOLS, json={"topic": "x", "settings": {"steps": 0}}), 400, "steps")
        err(c.post(POOLS, json={"plan": plan(width=100)}), 400, "width")
        err(c.post(POOLS, json={"plan": plan(model="/no/such/model")}), 404)
        err(c.post(POOLS, json={"plan": {**plan(), "pool": "Not A Slug"}}), 400, "pool")
        lone = json.dumps({"plan": {**plan(), "topic": "half \ud800 pair"}}).encode()  # escaped: \ud800
        err(c.post(POOLS, content=lone, headers={"content-type": "application/json"}), 400, "topic")
        err(c.post(POOLS, json={"plan": {**plan(), "kinds": []}}), 400, "kinds")
        err(c.post(POOLS, json={"plan": {**plan(), "extra": 1}}), 400, "extra")
        # Planning from a topic (offline: the planner's template grammar) makes a draft, no job.
        r = c.post(POOLS, json={"topic": "Bahnhof", "images": 6, "offline": True, "mix": "interiors=2,items=1",
                                "language": "de", "name": "bahnhof-offline",
                                "settings": {"width": 64, "height": 64, "steps": 2}})
        assert r.status_code == 201, r.text
        drafted = r.json()
        assert drafted["status"] == "draft" and drafted["name"] == "bahnhof-offline" and drafted["target"] == 6
        assert [k["kind"] for k in drafted["plan"]["kinds"]] == ["interiors", "items"]
        assert drafted["plan"]["settings"]["steps"] == 2 and drafted["plan"]["language"] == "de"
        err(c.post(POOLS, json={"topic": "x", "mix": "interiors"}), 400, "mix")
        pid = c.post(POOLS, json={"plan": plan("bad-edits")}).json()["id"]
        bomb = "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"
        err(c.put(f"{POOLS}/{pid}/plan", content=bomb.encode(), headers={"content-type": "application/yaml"}),
            400, "aliases")
        err(c.put(f"{POOLS}/{pid}/plan", content=b"[" * 50_000 + b"]" * 50_000,
                  headers={"content-type": "application/json"}), 400)
        err(c.put(f"{POOLS}/{pid}/plan", content=b'{"pool": NaN}', headers={"content-type": "application/json"}),
            400)
        err(c.put(f"{POOLS}/{pid}/plan", content=b"\xff\xfe", headers={"content-type": "application/json"}), 400)
        err(c.get(f"{POOLS}/{pid}/export"), 400, "nothing to export")
        err(c.get(f"{POOLS}/{pid}/images", params={"status": "lost"}), 400)
        err(c.get(f"{POOLS}/{pid}/images", params={"limit": 0}), 400)
        err(c.get(f"{POOLS}/{pid}/plan", params={"format": "xml"}), 400)
        err(c.get(POOLS, params={"status": "sleeping"}), 400)
        assert follow(c, pid)[-1][1]["status"] == "draft"  # a draft's stream ends at once
        for method, path in (("GET", ""), ("GET", "/plan"), ("PUT", "/plan"), ("POST", "/start"),
                             ("POST", "/pause"), ("POST", "/resume"), ("POST", "/cancel"), ("GET", "/events"),
                             ("GET", "/images"), ("GET", "/images/0123456789abcdef"), ("GET", "/report"),
                             ("GET", "/export"), ("GET", "/sheets/interiors.png")):
            r = c.request(method, f"{POOLS}/nope{path}", json=plan() if method == "PUT" else None)
            assert err(r, 404) in ("pool_not_found", "not_found"), (method, path)
        r = c.post(f"{POOLS}/{pid}/start", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert c.get(f"{POOLS}/{pid}").json()["status"] == "draft"
        assert c.get("/api/v1/jobs", params={"api": "pool"}).json()["total"] == before
        assert c.get("/health").status_code == 200


def test_the_api_key_covers_the_pools(tmp_path):
    from fastapi.testclient import TestClient

    from bildwerk.server.app import create_app
    from bildwerk.server.settings import ServerSettings

    app = create_app(ServerSettings(store=tmp_path / "store", api_key="s3cret"), service=object())
    client = TestClient(app, base_url="http://127.0.0.1")
    for method, path in (("GET", POOLS), ("POST", POOLS), ("GET", f"{POOLS}/x/export"),
                         ("PUT", f"{POOLS}/x/plan"), ("GET", f"{POOLS}/x/events")):
        r = client.request(method, path)
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"], (method, path)
    assert client.get(POOLS, headers={"X-API-Key": "s3cret"}).status_code == 404  # a stand-in runs no pools


@pytest.mark.extended
def test_a_server_killed_mid_pool_resumes_and_repeats_nothing(tiny_models, tmp_path):
    srv = ServerProcess(tmp_path, str(tiny_models["sd"]), warmup=False,
                        extra_env={"BILDWERK_POOL_WINDOW": str(WINDOW)}).start()
    try:
        with srv.client() as c:
            pid = c.post(POOLS, json={"plan": plan("restart", (4, 4, 4), steps=4)}).json()["id"]
            c.post(f"{POOLS}/{pid}/start")
            wait_pool(c, pid, lambda p: p["accepted"] >= 3, what="three pictures")
        srv.proc.send_signal(signal.SIGKILL)  # a crash: no drain, jobs left running
        srv.proc.wait(30)
        srv.start()  # the same store: the pool was running, so it resumes by itself
        with srv.client() as c:
            assert c.get(f"{POOLS}/{pid}").json()["status"] == "running"
            assert follow(c, pid, timeout=300)[-1][1]["status"] == "complete"
            assert_made_once(c, pid, 12)
            z = zipfile.ZipFile(io.BytesIO(c.get(f"{POOLS}/{pid}/export").content))
            assert len([n for n in z.namelist() if n.endswith(".png")]) == 12
        # A graceful stop mid-pool (SIGTERM) resumes the same way; an open stream hears of it.
        heard: list = []
        with srv.client() as c:
            pid2 = c.post(POOLS, json={"plan": plan("restart-2", (3, 3, 3), steps=4)}).json()["id"]
            c.post(f"{POOLS}/{pid2}/start")
            wait_pool(c, pid2, lambda p: p["accepted"] >= 2, what="two pictures")
            listener = threading.Thread(target=lambda: heard.extend(follow(srv.client(), pid2)))
            listener.start()
            time.sleep(0.5)
            assert srv.signal(signal.SIGTERM) in (0, -signal.SIGTERM)
            listener.join(30)
        assert heard and heard[-1][0] == "stopping", heard[-3:]
        assert "Application shutdown complete" in srv.log.read_text()
        srv.start()
        with srv.client() as c:
            assert follow(c, pid2, timeout=300)[-1][1]["status"] == "complete"
            assert_made_once(c, pid2, 9)
    finally:
        srv.stop()
