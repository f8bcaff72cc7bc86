"""The persistent job store: round trips, content addressing, queue rules, crash safety."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from bildwerk.core.errors import BildwerkError, InvalidImageError, InvalidRequestError
from bildwerk.core.prompt import PromptRecord
from bildwerk.core.request import build_request
from bildwerk.images.io import encode_png
from bildwerk.jobs.migrations import LATEST_VERSION, MIGRATIONS, MigrationError, migrate
from bildwerk.jobs.store import (
    CorruptImageError,
    ExportError,
    ImageNotFoundError,
    JobExistsError,
    JobNotFoundError,
    JobStateError,
    PoolNotFoundError,
    PoolStateError,
    QueueFull,
    Store,
)


def png(seed: int, size: tuple[int, int] = (16, 8)) -> bytes:
    color = (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256)
    return encode_png(Image.new("RGB", size, color))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def request(prompt: str = "a red lake", **extra) -> dict:
    return {"prompt": prompt, "seed": 7, "mode": "text-to-image", "model": None, **extra}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store")
    yield s
    s.close()


def stored_files(store: Store) -> list[Path]:
    return sorted(p for p in store.images_dir.glob("*/*.png"))


# ------------------------------------------------------------------ round trips


def test_connection_settings(store):
    conn = sqlite3.connect(store.db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    with store.transaction(write=False) as c:
        assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert c.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert c.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION


def test_create_and_get_round_trip(store):
    image = Image.new("RGB", (64, 64), (200, 10, 10))
    mask = Image.new("L", (64, 64), 255)
    req = build_request(
        mode="inpaint",
        prompt="a red lake",
        seed=42,
        model="tiny-sd",
        image=image,
        mask=mask,
        prompt_record=PromptRecord(original="ein roter See", language="de", prompt="a red lake"),
    ).record()
    image_png, mask_png = encode_png(image), encode_png(mask)
    job = store.create_job(
        request=req,
        api="museum",
        engine="local",
        options={"response_format": "png"},
        inputs={"image": image_png, "mask": mask_png},
    )
    assert len(job.id) == 32 and job.status == "queued" and job.attempts == 0
    got = store.get(job.id)
    assert got == job
    assert got.request == req and got.options == {"response_format": "png"}
    assert (got.api, got.engine, got.model, got.mode) == ("museum", "local", "tiny-sd", "inpaint")
    assert (got.prompt, got.original_prompt, got.language, got.seed) == (
        "a red lake",
        "ein roter See",
        "de",
        42,
    )
    assert got.record is None and got.results == [] and not got.cancel_requested
    assert got.inputs == {"image": sha(image_png), "mask": sha(mask_png)}
    info = store.image_info(got.inputs["image"])
    assert (info.width, info.height, info.bytes) == (64, 64, len(image_png))
    assert store.read_image(got.inputs["mask"]) == mask_png
    assert got.to_dict()["inputs"]["image"] == sha(image_png)
    assert store.get("nope") is None


def test_create_job_validates(store):
    with pytest.raises(InvalidRequestError, match="api"):
        store.create_job(request=request(), api="comfy", engine="local")
    with pytest.raises(InvalidRequestError, match="engine"):
        store.create_job(request=request(), api="native", engine="gpu")
    with pytest.raises(InvalidRequestError, match="role"):
        store.create_job(request=request(), api="native", engine="local", inputs={"x": png(1)})
    with pytest.raises(InvalidImageError, match="not a PNG"):
        store.create_job(request=request(), api="native", engine="local", inputs={"image": b"xx"})
    with pytest.raises(InvalidRequestError, match="job id"):
        store.create_job(request=request(), api="native", engine="local", job_id="../evil")
    store.create_job(request=request(), api="native", engine="local", job_id="abc")
    with pytest.raises(JobExistsError):
        store.create_job(request=request(), api="native", engine="local", job_id="abc")
    assert store.count() == 1


def test_transaction_rolls_back_everything(store):
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction():
            store.create_job(request=request(), api="native", engine="local", job_id="a")
            store.create_job(request=request(), api="native", engine="local", job_id="b")
            raise RuntimeError("boom")
    assert store.count() == 0
    with store.transaction():  # nested calls join the outer transaction
        store.create_job(request=request(), api="native", engine="local", job_id="a")
        store.create_job(request=request(), api="native", engine="local", job_id="b")
    assert store.count() == 2


# ----------------------------------------------------------- content addressing


def test_images_are_content_addressed(store):
    data = png(1)
    digest = store.put_image(data)
    assert digest == sha(data)
    assert store.put_image(data) == digest  # idempotent
    path = store.image_path(digest)
    assert path == store.root / "images" / digest[:2] / f"{digest}.png"
    assert stored_files(store) == [path]
    assert store.read_image(digest) == data
    info = store.image_info(digest)
    assert (info.width, info.height, info.bytes) == (16, 8, len(data))
    # Two jobs with the same input share one file and one row.
    for _ in range(2):
        store.create_job(request=request(), api="native", engine="local", inputs={"image": data})
    assert stored_files(store) == [path]
    assert not list(store.images_dir.glob("*/.*.tmp"))


def test_corrupted_or_missing_file_is_detected_and_healed(store):
    data = png(2)
    digest = store.put_image(data)
    path = store.image_path(digest)
    damaged = bytearray(data)
    damaged[-20] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptImageError, match="do not match") as err:
        store.read_image(digest)
    assert err.value.code == "corrupt_image" and err.value.path == path
    assert any("do not match" in p for p in store.verify())
    path.unlink()
    with pytest.raises(CorruptImageError, match="missing"):
        store.read_image(digest)
    assert store.put_image(data) == digest  # storing the bytes again repairs the file
    assert store.read_image(digest) == data and store.verify() == []


def test_image_lookups_reject_bad_hashes(store):
    with pytest.raises(InvalidRequestError):
        store.image_path("../../etc/passwd")
    with pytest.raises(InvalidRequestError):
        store.read_image("A" * 64)
    with pytest.raises(ImageNotFoundError):
        store.read_image("0" * 64)
    with pytest.raises(InvalidImageError):
        store.put_image(b"GIF89a....")


# ------------------------------------------------------------------ queue rules


def test_queue_bound_raises_queue_full(store):
    a = store.create_job(request=request(), api="native", engine="local", max_queued=2)
    store.create_job(request=request(), api="native", engine="local", max_queued=2)
    with pytest.raises(QueueFull) as err:
        store.create_job(request=request(), api="native", engine="local", max_queued=2)
    assert (err.value.depth, err.value.limit, err.value.code) == (2, 2, "queue_full")
    assert isinstance(err.value, BildwerkError)
    # A refused job with an input image leaves no file behind.
    with pytest.raises(QueueFull):
        store.create_job(
            request=request(), api="native", engine="local", max_queued=2, inputs={"image": png(3)}
        )
    assert stored_files(store) == []
    claimed = store.claim_next()
    assert claimed.id == a.id
    with pytest.raises(QueueFull):  # running jobs count too
        store.create_job(request=request(), api="native", engine="local", max_queued=2)
    store.finish(claimed.id, [(png(4), 7)], {})
    assert store.queue_depth() == 1
    store.create_job(request=request(), api="native", engine="local", max_queued=2)
    store.create_job(request=request(), api="native", engine="local")  # no limit
    assert store.queue_depth() == 3


def test_claim_next_is_fifo(store):
    ids = [
        store.create_job(request=request(), api="native", engine="local").id for _ in range(3)
    ]
    first = store.claim_next()
    assert first.id == ids[0] and first.status == "running" and first.attempts == 1
    assert first.started_at is not None
    assert [store.claim_next().id for _ in range(2)] == ids[1:]
    assert store.claim_next() is None


def test_claim_next_racing_threads_get_distinct_jobs(tmp_path):
    # Two Store instances (as two processes would have) and several threads each: every
    # thread has its own connection, so this races real SQLite locks, not a Python lock.
    stores = [Store(tmp_path / "store"), Store(tmp_path / "store")]
    ids = {
        stores[0].create_job(request=request(f"job {i}"), api="native", engine="local").id
        for i in range(120)
    }
    n_threads = 6
    barrier = threading.Barrier(n_threads)
    claimed: list[list[str]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        store = stores[n % 2]
        try:
            barrier.wait()
            while (job := store.claim_next()) is not None:
                claimed[n].append(job.id)
                store.get(job.id)  # reads between claims widen the race window
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert not errors, errors[0]
        every = [i for part in claimed for i in part]
        assert len(every) == len(set(every)) == len(ids) and set(every) == ids
        assert stores[1].count("running") == len(ids)
        assert all(j.attempts == 1 for j in stores[1].list_jobs(limit=None))
    finally:
        for s in stores:
            s.close()


def test_recover_after_simulated_crash(tmp_path):
    root = tmp_path / "store"
    first = Store(root)
    a = first.create_job(request=request("a"), api="native", engine="local")
    b = first.create_job(request=request("b"), api="native", engine="local")
    c = first.create_job(request=request("c"), api="native", engine="local")
    assert first.claim_next().id == a.id
    assert first.claim_next().id == b.id
    assert first.cancel(b.id) == "cancelling"
    # The process "dies": no close(), no finish(); a new process opens the folder.
    second = Store(root)
    assert second.recover() == 2
    got_a, got_b, got_c = (second.get(j.id) for j in (a, b, c))
    assert (got_a.status, got_a.started_at, got_a.attempts) == ("queued", None, 1)
    assert got_b.status == "cancelled" and got_b.finished_at is not None
    assert got_c.status == "queued"
    again = second.claim_next()
    assert again.id == a.id and again.attempts == 2  # it keeps its place in the queue
    assert second.recover() == 1 and second.recover() == 0
    first.close()
    second.close()


def test_requeue_after_a_graceful_stop(store):
    a = store.create_job(request=request("a"), api="native", engine="local")
    b = store.create_job(request=request("b"), api="native", engine="local")
    store.claim_next()
    back = store.requeue(a.id)
    assert (back.status, back.started_at, back.attempts) == ("queued", None, 0)
    assert store.claim_next().id == a.id  # still first in line
    with pytest.raises(JobStateError, match="requeue"):
        store.requeue(b.id)


def test_recover_gives_up_on_a_job_that_keeps_crashing(store):
    job = store.create_job(request=request(), api="native", engine="local")
    for _ in range(2):
        store.claim_next()
        store.recover(max_attempts=3)
    assert store.get(job.id).status == "queued"
    store.claim_next()
    assert store.recover(max_attempts=3) == 1
    got = store.get(job.id)
    assert (got.status, got.error_type, got.attempts) == ("failed", "interrupted", 3)
    assert "3 time(s)" in got.error_message


_CHILD = textwrap.dedent(
    """
    import hashlib, sys
    from PIL import Image
    from bildwerk.images.io import encode_png
    from bildwerk.jobs.store import Store

    store = Store(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        job = store.create_job(request={"prompt": f"job {i}", "seed": i}, api="native",
                               engine="local")
        print("created", job.id, flush=True)
        if i % 2 == 0:
            claimed = store.claim_next()
            data = encode_png(Image.new("RGB", (8, 8), (i % 256, i // 256 % 256, 3)))
            store.finish(claimed.id, [(data, i)], {"i": i})
            print("finished", claimed.id, hashlib.sha256(data).hexdigest(), flush=True)
        i += 1
    """
)


def test_sigkill_loses_no_committed_job(tmp_path):
    root = tmp_path / "store"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while sum(ln.startswith("created") for ln in lines) < 40:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"child ended early: {proc.stderr.read() if proc.stderr else ''}")
            lines.append(line)
            assert time.monotonic() < deadline, "child too slow"
        os.kill(proc.pid, signal.SIGKILL)  # mid-write, wherever it happens to be
        proc.wait(30)
        lines += proc.stdout.readlines()  # everything it reported before it died
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    store = Store(root)
    try:
        conn = sqlite3.connect(store.db_path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.close()
        created = [ln.split()[1] for ln in lines if ln.startswith("created")]
        finished = [ln.split()[1:] for ln in lines if ln.startswith("finished")]
        assert len(created) >= 40
        for job_id in created:
            assert store.get(job_id) is not None, job_id
        for job_id, digest in finished:
            job = store.get(job_id)
            assert job.status == "succeeded" and job.results[0].sha256 == digest
            assert sha(store.read_image(digest)) == digest
        assert store.verify() == []
        assert store.recover() <= 1  # at most the job it was running when killed
        assert store.count("running") == 0
    finally:
        store.close()


# ------------------------------------------------------------------ transitions


def test_finish_stores_results_and_record(store):
    job = store.create_job(request=request(), api="openai", engine="openai")
    store.claim_next()
    results = [(png(10), 7), (png(11), 8)]
    done = store.finish(job.id, results, {"model": {"name": "tiny"}, "seeds": [7, 8]})
    assert done.status == "succeeded" and done.finished_at >= done.started_at
    assert done.record == {"model": {"name": "tiny"}, "seeds": [7, 8]}
    assert [(r.idx, r.sha256, r.seed) for r in done.results] == [
        (0, sha(results[0][0]), 7),
        (1, sha(results[1][0]), 8),
    ]
    assert store.read_image(done.results[1].sha256) == results[1][0]
    assert store.get(job.id) == done


def test_fail_and_cancel_transitions(store):
    queued = store.create_job(request=request(), api="native", engine="local")
    assert store.cancel(queued.id) == "cancelled"
    assert store.get(queued.id).status == "cancelled"
    assert store.cancel(queued.id) is None  # already finished
    assert store.is_cancel_requested(queued.id)

    running = store.create_job(request=request(), api="native", engine="local")
    store.claim_next()
    assert not store.is_cancel_requested(running.id)
    assert store.cancel(running.id) == "cancelling"
    assert store.cancel(running.id) == "cancelling"
    assert store.get(running.id).status == "running" and store.is_cancel_requested(running.id)
    assert store.mark_cancelled(running.id).status == "cancelled"

    failing = store.create_job(request=request(), api="native", engine="local")
    store.claim_next()
    failed = store.fail(failing.id, "model_not_found", "no model called x")
    assert (failed.status, failed.error_type, failed.error_message) == (
        "failed",
        "model_not_found",
        "no model called x",
    )
    with pytest.raises(JobNotFoundError):
        store.cancel("missing")
    assert store.is_cancel_requested("missing")  # nothing to run it for


def test_illegal_transitions_are_refused(store):
    job = store.create_job(request=request(), api="native", engine="local")
    with pytest.raises(JobStateError, match="queued"):
        store.finish(job.id, [(png(1), 1)], {})  # never claimed
    store.cancel(job.id)
    with pytest.raises(JobStateError, match="cancelled") as err:
        store.finish(job.id, [(png(1), 1)], {})
    assert (err.value.status, err.value.code) == ("cancelled", "job_state")
    with pytest.raises(JobStateError):
        store.fail(job.id, "x", "y")
    with pytest.raises(JobStateError):
        store.mark_cancelled(job.id)
    with pytest.raises(JobNotFoundError):
        store.finish("missing", [], {})
    other = store.create_job(request=request(), api="native", engine="local")
    store.claim_next()
    store.finish(other.id, [(png(2), 2)], {})
    with pytest.raises(JobStateError, match="succeeded"):
        store.finish(other.id, [(png(3), 3)], {})
    with pytest.raises(JobStateError):
        store.fail(other.id, "x", "y")
    assert [r.seed for r in store.get(other.id).results] == [2]
    assert store.get(job.id).results == []
    # The refused results' files are unreferenced and go with the next gc().
    assert store.gc() == 2
    assert [p.stem for p in stored_files(store)] == [sha(png(2))]


# ---------------------------------------------------------------- list / search


def test_list_search_filter_and_paginate(store):
    made = []
    specs = [
        ("a red lake", None, "native", "text-to-image", None),
        ("a cat on a WALL", "sdxl", "a1111", "text-to-image", None),
        ("a wooden house", "sdxl", "museum", "inpaint", ("ein Holzhaus an der Straße", "de")),
        ("100 apples", None, "openai", "image-to-image", None),
        ("a black cat", None, "native", "text-to-image", ("чёрная Кошка", "ru")),
    ]
    for prompt, model, api, mode, original in specs:
        req = request(prompt, model=model, mode=mode)
        if original:
            req["prompt_record"] = PromptRecord(
                original=original[0], language=original[1], prompt=prompt
            ).model_dump(mode="json")
        made.append(store.create_job(request=req, api=api, engine="local"))
        time.sleep(0.002)  # distinct created_at
    ids = [j.id for j in made]

    def listed(**kw) -> list[str]:
        return [j.id for j in store.list_jobs(**kw)]

    assert listed() == ids[::-1]  # newest first
    assert listed(text="CAT") == [ids[4], ids[1]]
    assert listed(text="cat wall") == [ids[1]]  # every word must occur
    assert listed(text="STRASSE") == [ids[2]]  # Unicode case folding (ß)
    assert listed(text="кошка") == [ids[4]]  # the user's original words are searched too
    assert listed(text="100%") == []  # LIKE wildcards are literal
    assert listed(text="0_a") == []
    assert listed(model="sdxl") == [ids[2], ids[1]]
    assert listed(api="native") == [ids[4], ids[0]]
    assert listed(mode="inpaint") == [ids[2]]
    assert listed(since=made[1].created_at, until=made[3].created_at) == [ids[2], ids[1]]
    pages = [listed(limit=2, offset=o) for o in (0, 2, 4)]
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[:1]]
    assert listed(limit=None) == ids[::-1]

    store.claim_next()
    store.cancel(ids[1])
    assert listed(status="running") == [ids[0]]
    assert listed(status=["running", "cancelled"]) == [ids[1], ids[0]]
    assert store.count() == 5 and store.count("queued") == 3 and store.queue_depth() == 4
    with pytest.raises(InvalidRequestError, match="status"):
        store.list_jobs(status="done")
    with pytest.raises(InvalidRequestError):
        store.list_jobs(offset=-1)


# ------------------------------------------------------------ delete and gc


def test_delete_removes_only_unshared_files(store):
    shared, own_a, own_b = png(20), png(21), png(22)
    a = store.create_job(request=request(), api="native", engine="local", inputs={"image": shared})
    b = store.create_job(request=request(), api="native", engine="local", inputs={"image": shared})
    store.claim_next()
    store.finish(a.id, [(own_a, 1)], {})
    store.claim_next()
    store.finish(b.id, [(own_b, 1), (shared, 2)], {})
    assert len(stored_files(store)) == 3

    assert store.delete(a.id)
    assert store.get(a.id) is None
    assert not store.image_path(sha(own_a)).exists()
    assert store.image_info(sha(own_a)) is None
    assert store.read_image(sha(shared)) == shared  # still used by b
    assert store.delete(a.id) is False
    assert store.delete(b.id)
    assert stored_files(store) == []
    with store.transaction(write=False) as conn:
        for table in ("images", "job_inputs", "job_results"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def test_delete_refuses_a_running_job(store):
    job = store.create_job(request=request(), api="native", engine="local")
    store.claim_next()
    with pytest.raises(JobStateError, match="delete"):
        store.delete(job.id)
    store.mark_cancelled(job.id)
    assert store.delete(job.id)


def test_gc_removes_unreferenced_rows_files_and_stale_temps(store):
    kept = png(30)
    store.create_job(request=request(), api="native", engine="local", inputs={"image": kept})
    orphan = store.put_image(png(31))
    stray = png(32)  # a crash after the file was written, before its row
    stray_path = store.image_path(sha(stray))
    stray_path.parent.mkdir(parents=True, exist_ok=True)
    stray_path.write_bytes(stray)
    folder = store.image_path(orphan).parent
    stale, fresh = folder / f".{orphan}.old.tmp", folder / f".{orphan}.new.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    assert store.gc() == 3  # orphan, stray and the stale temp file
    assert store.image_info(orphan) is None and not stray_path.exists() and not stale.exists()
    assert fresh.exists()  # may belong to a write in progress
    assert store.read_image(sha(kept)) == kept
    assert store.gc() == 0


def test_gc_between_staging_and_commit_cannot_lose_an_input(store, monkeypatch):
    # gc() runs after create_job wrote the input file but before its transaction:
    # the file is unreferenced then, so gc removes it; the transaction must notice.
    data = png(33)
    original = Store._stage

    def stage_then_gc(self, *args):
        staged = original(self, *args)
        assert self.gc() == 1 and not self.image_path(staged[0]).exists()
        return staged

    monkeypatch.setattr(Store, "_stage", stage_then_gc)
    job = store.create_job(request=request(), api="native", engine="local", inputs={"image": data})
    monkeypatch.undo()
    assert store.read_image(job.inputs["image"]) == data
    assert store.verify() == []


def test_connections_of_finished_threads_are_closed(store):
    for _ in range(5):
        t = threading.Thread(target=store.count)
        t.start()
        t.join()
    t = threading.Thread(target=store.count)
    t.start()
    t.join()
    # The main thread's and at most the last thread's connection remain open.
    assert len(store._conns) <= 2


# ------------------------------------------------------------------------ export


def test_export_writes_a_valid_imagefolder(store, tmp_path):
    from bildwerk.train.data import validate_image_folder

    de = request("a wooden house", model="tiny-sd")
    de["prompt_record"] = PromptRecord(
        original="ein Holzhaus", language="de", prompt="a wooden house"
    ).model_dump(mode="json")
    en = request("a cat, \"quoted\",\nnew line")
    en["prompt_record"] = PromptRecord(original="a cat", language="en").model_dump(mode="json")
    jobs = [store.create_job(request=r, api="native", engine="local") for r in (de, en, request())]
    store.claim_next()
    store.finish(jobs[0].id, [(png(40), 5), (png(41), 6)], {"model": {"name": "tiny-sd-v2"}})
    store.claim_next()
    store.finish(jobs[1].id, [(png(42), 9)], {})
    store.claim_next()
    store.fail(jobs[2].id, "boom", "it broke")  # not exported

    out = store.export(None, tmp_path / "export")
    report = validate_image_folder(out)
    assert report.ok, str(report)
    assert report.rows == 3 and report.images_checked == 3
    with (out / "metadata.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file_name", "text", "seed", "model", "job_id", "text_de"]
    assert rows[0] == {
        "file_name": f"images/{jobs[0].id}_0.png",
        "text": "a wooden house",
        "seed": "5",
        "model": "tiny-sd-v2",  # the model that ran, from the record
        "job_id": jobs[0].id,
        "text_de": "ein Holzhaus",
    }
    assert rows[2]["text"] == "a cat, \"quoted\",\nnew line" and rows[2]["text_de"] == ""
    assert (out / rows[1]["file_name"]).read_bytes() == png(41)

    with pytest.raises(ExportError, match="not an empty folder"):
        store.export(None, out)
    only = store.export([jobs[1].id, jobs[2].id], tmp_path / "only")
    assert validate_image_folder(only).ok
    assert [p.name for p in (only / "images").iterdir()] == [f"{jobs[1].id}_0.png"]
    filtered = store.export(None, tmp_path / "filtered", model="tiny-sd")
    assert len(list((filtered / "images").iterdir())) == 2
    with pytest.raises(JobNotFoundError):
        store.export(["missing"], tmp_path / "x")
    with pytest.raises(ExportError, match="nothing to export"):
        store.export(None, tmp_path / "y", text="zebra")
    assert not (tmp_path / "y").exists()


# --------------------------------------------------------------------- migrations


@pytest.mark.parametrize("version", range(1, LATEST_VERSION + 1))
def test_each_migration_upgrades_the_previous_version(tmp_path, version):
    root = tmp_path / "store"
    root.mkdir()
    conn = sqlite3.connect(root / "bildwerk.db", isolation_level=None)
    migrate(conn, MIGRATIONS[: version - 1])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version - 1
    conn.close()
    with Store(root) as store:
        with store.transaction(write=False) as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        assert store.verify() == []
        job = store.create_job(request=request(), api="native", engine="local")
        assert store.get(job.id).status == "queued"


def test_migration_3_adds_pools_to_a_version_2_store(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    conn = sqlite3.connect(root / "bildwerk.db", isolation_level=None)
    migrate(conn, MIGRATIONS[:2])
    conn.execute(
        "INSERT INTO jobs (id, created_at, status, api, engine, request_json) "
        "VALUES ('old', 1.0, 'succeeded', 'native', 'local', '{}')"
    )
    conn.close()
    with Store(root) as store:
        with store.transaction(write=False) as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] >= 3
            cols = {r["name"]: r["type"] for r in c.execute("PRAGMA table_info(jobs)")}
            assert (cols["pool_id"], cols["pool_item"]) == ("TEXT", "TEXT")
            pools = {r["name"] for r in c.execute("PRAGMA table_info(pools)")}
            assert pools == {"id", "name", "topic", "status", "plan_json", "created_at", "updated_at", "error"}
            # A resumed pool looks its items up by (pool, item): an index, not a scan of the history.
            plan = " ".join(r["detail"] for r in c.execute(
                "EXPLAIN QUERY PLAN SELECT id, pool_item, status FROM jobs WHERE pool_id = ? AND pool_item IN (?, ?)",
                ("p", "a", "b")))
            assert "jobs_pool" in plan, plan
        old = store.get("old")
        assert (old.pool_id, old.pool_item) == (None, None)
        pool = store.create_pool(plan={"pool": "p"}, name="p", topic="t")
        job = store.create_job(request=request(), api="pool", engine="local", pool_id=pool.id, pool_item="i1")
        assert (store.get(job.id).pool_id, store.get(job.id).pool_item) == (pool.id, "i1")
        assert [j.id for j in store.list_jobs(pool_id=pool.id)] == [job.id]
        assert store.pool_item_jobs(pool.id) == {"i1": [(job.id, "queued")]}
        with pytest.raises(PoolNotFoundError):  # a job names an existing pool (a foreign key)
            store.create_job(request=request(), api="pool", engine="local", pool_id="nope", pool_item="i1")
        with pytest.raises(InvalidRequestError, match="both"):
            store.create_job(request=request(), api="pool", engine="local", pool_id=pool.id)
        assert store.verify() == []


def test_pool_status_changes_check_the_status_they_start_from(store):
    pool = store.create_pool(plan={"pool": "p"}, name="p", topic="t")
    assert (pool.status, pool.error) == ("draft", None)
    running = store.update_pool(pool.id, action="start", allowed=("draft",), status="running")
    assert running.status == "running" and running.updated_at >= pool.updated_at
    with pytest.raises(PoolStateError, match="cannot start pool .*: it is running; only a pool that is draft"):
        store.update_pool(pool.id, action="start", allowed=("draft",), status="running")
    failed = store.update_pool(pool.id, action="end", status="failed", error="why")
    assert (failed.status, failed.error) == ("failed", "why")
    assert store.update_pool(pool.id, action="edit", plan={"pool": "q"}, name="q").error == "why"  # kept
    with pytest.raises(PoolNotFoundError):
        store.update_pool("nope", action="start", status="running")
    with pytest.raises(InvalidRequestError, match="unknown pool status"):
        store.update_pool(pool.id, action="x", status="sleeping")
    second = store.create_pool(plan={}, name="s", topic="t")
    assert [p.id for p in store.list_pools()] == [second.id, pool.id]
    assert [p.id for p in store.list_pools(status="failed")] == [pool.id]
    assert store.count_pools() == 2 and store.count_pools("draft") == 1
    with pytest.raises(InvalidRequestError, match="invalid pool id"):
        store.create_pool(plan={}, name="x", topic="t", pool_id="../x")


def test_a_new_migration_keeps_existing_data(tmp_path):
    root = tmp_path / "store"
    with Store(root) as store:
        job = store.create_job(
            request=request(), api="native", engine="local", inputs={"image": png(50)}
        )
    v2 = """
    ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_priority ON jobs (priority, created_at);
    """
    conn = sqlite3.connect(root / "bildwerk.db", isolation_level=None)
    assert migrate(conn, (*MIGRATIONS, v2)) == 1
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION + 1
    assert conn.execute("SELECT priority FROM jobs WHERE id = ?", (job.id,)).fetchone() == (0,)
    assert migrate(conn, (*MIGRATIONS, v2)) == 0  # already there
    conn.close()


def test_a_failing_migration_changes_nothing(tmp_path):
    db = tmp_path / "bildwerk.db"
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn)
    bad = "CREATE TABLE extra (x INTEGER);\nINSERT INTO no_such_table VALUES (1);"
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, (*MIGRATIONS, bad))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "extra" not in names
    conn.close()


def test_a_newer_database_is_refused(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    conn = sqlite3.connect(root / "bildwerk.db", isolation_level=None)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 5}")
    conn.close()
    with pytest.raises(MigrationError, match="newer"):
        Store(root)
