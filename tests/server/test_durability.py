"""Nothing accepted is lost: SIGKILL and restart, SIGTERM drain, a bounded queue."""

from __future__ import annotations

import hashlib
import io
import signal
import time

import pytest
from harness.server import ServerProcess, wait_job
from PIL import Image


def _submit(c, n: int, **fields) -> list[str]:
    ids = []
    for i in range(n):
        r = c.post("/api/v1/jobs", json={"prompt": f"job {i}", "seed": i, **fields})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


# Across processes and slow (a minute): CI runs it with the extended group.
@pytest.mark.extended
def test_sigkill_then_restart_runs_every_accepted_job(tiny_models, tmp_path):
    # One job at a time (no batching), so the kill lands between finished and unfinished jobs.
    srv = ServerProcess(tmp_path, str(tiny_models["sd"]), warmup=False,
                        extra_env={"BILDWERK_MAX_BATCH": "1"}).start()
    try:
        with srv.client() as c:
            ids = _submit(c, 6, steps=15, num_images=2)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # kill once some finished and some did not
                states = [c.get(f"/api/v1/jobs/{i}").json()["status"] for i in ids]
                if "succeeded" in states:
                    break
                time.sleep(0.05)
            finished_before = {i for i, s in zip(ids, states, strict=True) if s == "succeeded"}
        assert srv.signal(signal.SIGKILL) == -signal.SIGKILL
        assert finished_before and len(finished_before) < len(ids), states
    finally:
        srv.stop()

    again = ServerProcess(tmp_path, str(tiny_models["sd"]), warmup=False).start()
    try:
        with again.client() as c:
            for i in ids:
                job = wait_job(c, i)
                assert job["status"] == "succeeded", job
                assert len(job["results"]) == 2
                for res in job["results"]:
                    data = c.get(res["url"]).content
                    assert hashlib.sha256(data).hexdigest() == res["sha256"]  # intact, content-addressed
                    Image.open(io.BytesIO(data)).verify()
    finally:
        again.stop()


# A server process (slow): CI runs it with the extended group.
@pytest.mark.extended
def test_full_queue_answers_429_with_retry_after(tiny_models, tmp_path):
    srv = ServerProcess(tmp_path, str(tiny_models["sd"]), max_queue=1, warmup=False).start()
    try:
        with srv.client() as c:
            accepted, refused = [], []
            for i in range(4):
                r = c.post("/api/v1/jobs", json={"prompt": "x", "seed": i, "steps": 40, "num_images": 4})
                (accepted if r.status_code == 202 else refused).append(r)
            assert refused, "the queue never filled"
            r = refused[0]
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "queue_full"
            assert "bildwerk_requests_rejected_total{reason=\"queue_full\"}" in c.get("/metrics").text
            for a in accepted:  # accepted jobs still end normally (cancelled here to save time)
                c.post(f"/api/v1/jobs/{a.json()['id']}/cancel")
                assert wait_job(c, a.json()["id"])["status"] in ("cancelled", "succeeded")
    finally:
        srv.stop()


# Across processes and slow (a minute): CI runs it with the extended group.
@pytest.mark.extended
def test_sigterm_drains_running_job_and_keeps_queued_ones(tiny_models, tmp_path):
    srv = ServerProcess(tmp_path, str(tiny_models["sd"]), warmup=False).start()
    with srv.client() as c:
        ids = _submit(c, 2, steps=40, num_images=2)
        deadline = time.monotonic() + 60
        while c.get(f"/api/v1/jobs/{ids[0]}").json()["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.02)
    # uvicorn shuts down gracefully, then re-raises the signal as its exit status.
    assert srv.signal(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in srv.log.read_text()

    again = ServerProcess(tmp_path, str(tiny_models["sd"]), warmup=False).start()
    try:
        with again.client() as c:
            first = c.get(f"/api/v1/jobs/{ids[0]}").json()
            assert first["status"] == "succeeded"  # the running job was finished before exit
            for i in ids:
                assert wait_job(c, i, timeout=300)["status"] == "succeeded"
    finally:
        again.stop()
