"""The server batches across requests, keeps every seed exact, and shares a store between
worker processes: each job runs once, a killed worker's job is re-run once elsewhere."""

from __future__ import annotations

import io
import re
import signal
import time

import numpy as np
import pytest
from harness.server import ServerProcess, wait_job
from PIL import Image

from bildwerk.app.generate import Generator
from bildwerk.core.spec import JobSpec
from bildwerk.jobs.store import Store

PROMPTS = ["a red apple", "ein See", "une maison", "a blue car", "a green tree", "a yellow sun"]


def _submit(c, fields: list[dict]) -> list[str]:
    ids = []
    for f in fields:
        r = c.post("/api/v1/jobs", json=f)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def _rows_histogram(metrics: str) -> tuple[float, float]:
    total = float(re.search(r"^bildwerk_batch_rows_sum (\S+)$", metrics, re.M).group(1))
    count = float(re.search(r"^bildwerk_batch_rows_count (\S+)$", metrics, re.M).group(1))
    return total, count


@pytest.mark.extended  # 26 s; the batcher's exactness is in make test (tests/engine/test_batching_exact.py)
def test_concurrent_jobs_share_unet_calls_and_keep_their_pixels(tiny_models, tmp_path):
    model = str(tiny_models["sd"])
    fields = [{"prompt": p, "seed": i, "steps": 8, "model": model} for i, p in enumerate(PROMPTS)]
    srv = ServerProcess(tmp_path, model, warmup=False).start()
    try:
        with srv.client() as c:
            ids = _submit(c, fields)
            jobs = [wait_job(c, i) for i in ids]
            assert all(j["status"] == "succeeded" for j in jobs), jobs
            pngs = [c.get(f"/api/v1/jobs/{i}/images/0").content for i in ids]
            total, count = _rows_histogram(c.get("/metrics").text)
    finally:
        srv.stop()
    # 6 jobs x 8 steps x 2 rows alone would be 48 calls of 2 rows; batched, calls hold more.
    assert count < 48 and total / count > 2, (total, count)
    generator = Generator()
    for f, png in zip(fields, pngs, strict=True):
        alone = generator.run(JobSpec.build(origin="native", **f)).images[0]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), np.asarray(alone)), f


# Two server processes (slow): CI runs it with the extended group.
@pytest.mark.extended
def test_two_workers_on_one_store_run_each_job_once(tiny_models, tmp_path):
    model = str(tiny_models["sd"])
    a = ServerProcess(tmp_path, model, warmup=False).start()
    b = ServerProcess(tmp_path, model, warmup=False).start()
    try:
        with a.client() as ca, b.client() as cb:
            ids = _submit(ca, [{"prompt": f"job {i}", "seed": i, "steps": 3} for i in range(6)])
            ids += _submit(cb, [{"prompt": f"job {i}", "seed": i, "steps": 3} for i in range(6, 12)])
            for i in ids:
                assert wait_job(ca, i)["status"] == "succeeded"
    finally:
        a.stop()
        b.stop()
    with Store(tmp_path / "store") as store:
        for i in ids:
            row = store.get(i)
            assert row.attempts == 1 and len(row.results) == 1, row


@pytest.mark.extended
def test_a_killed_workers_job_is_rerun_once_by_the_other(tiny_models, tmp_path):
    model = str(tiny_models["sd"])
    servers = [ServerProcess(tmp_path, model, warmup=False).start() for _ in range(2)]
    try:
        with servers[0].client() as c:
            (job,) = _submit(c, [{"prompt": "long", "seed": 1, "steps": 40, "num_images": 2}])
            store = Store(tmp_path / "store")
            deadline = time.monotonic() + 60
            while (row := store.get(job)).status != "running" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert row.status == "running" and row.worker_id
            pid = int(row.worker_id.split(":")[1])
            holder = next(s for s in servers if s.proc.pid == pid)
            other = next(s for s in servers if s is not holder)
            assert holder.signal(signal.SIGKILL) == -signal.SIGKILL
        with other.client() as c:
            done = wait_job(c, job, timeout=180)
        assert done["status"] == "succeeded"
        row = store.get(job)
        assert row.attempts == 2 and len(row.results) == 2 and row.worker_id.split(":")[1] == str(other.proc.pid)
        store.close()
    finally:
        for s in servers:
            s.stop()
