"""Worker leases: several worker processes sharing one store, each job run by one at a time.

Unit tests for claim_next(worker_id, model=), renew_leases(), reclaim_expired() and the
worker_id guard on the ends of a run; then real processes: two workers draining one
queue, and a worker SIGKILLed while holding a job that another process takes over.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

import bildwerk
from bildwerk.core.errors import InvalidRequestError
from bildwerk.images.io import encode_png
from bildwerk.jobs.migrations import LATEST_VERSION, MIGRATIONS, migrate
from bildwerk.jobs.sqlite.leases import holder_is_dead
from bildwerk.jobs.store import (
    DEFAULT_LEASE_SECONDS,
    JobStateError,
    Store,
    new_worker_id,
)

SRC = str(Path(bildwerk.__file__).resolve().parents[1])  # this tree's src, for children
HOST = socket.gethostname()
ELSEWHERE = "worker-on-another-host"  # a worker whose pid this host cannot check


def png(seed: int) -> bytes:
    return encode_png(Image.new("RGB", (8, 8), (seed % 256, 7, 9)))


def add(store: Store, prompt: str = "a red lake", model: str | None = None) -> str:
    req = {"prompt": prompt, "seed": 1, "mode": "text-to-image", "model": model}
    return store.create_job(request=req, api="native", engine="local").id


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store")
    yield s
    s.close()


# ------------------------------------------------------------------ worker ids


def test_worker_ids_and_the_dead_process_rule():
    me = new_worker_id()
    host, pid, tail = me.rsplit(":", 2)
    assert (host, int(pid)) == (HOST, os.getpid()) and len(tail) == 12
    assert new_worker_id() != me
    assert not holder_is_dead(me)
    # Our pid in an id we did not make: an earlier process with this pid (a restarted
    # container's pid 1), so dead.
    assert holder_is_dead(f"{HOST}:{os.getpid()}:0123456789ab")
    assert holder_is_dead(f"{HOST}:{dead_pid()}:ab")
    assert not holder_is_dead(f"{ELSEWHERE}:{dead_pid()}:ab")  # other hosts: only the lease
    for odd in ("", "worker-7", f"{HOST}:x:ab", f"{HOST}:0:ab", f"{HOST}:-1:ab"):
        assert not holder_is_dead(odd)
    # A killed child not yet reaped is a zombie: signal 0 reaches it, but it is dead.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not holder_is_dead(f"{HOST}:{proc.pid}:ab")
        proc.kill()
        deadline = time.monotonic() + 10
        while not holder_is_dead(f"{HOST}:{proc.pid}:ab"):
            assert time.monotonic() < deadline, "the zombie was never seen as dead"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------- claiming


def test_claim_with_a_worker_sets_its_lease(store):
    a, b = add(store), add(store)
    w = new_worker_id()
    before = time.time()
    job = store.claim_next(w, lease_seconds=10)
    assert (job.id, job.status, job.worker_id, job.attempts) == (a, "running", w, 1)
    assert before + 10 <= job.lease_until <= time.time() + 10
    plain = store.claim_next()  # no worker: no lease, as before leases
    assert (plain.id, plain.worker_id, plain.lease_until) == (b, None, None)
    with pytest.raises(InvalidRequestError, match="lease_seconds"):
        store.claim_next(w, lease_seconds=0)
    with pytest.raises(InvalidRequestError, match="worker_id"):
        store.claim_next("")
    assert DEFAULT_LEASE_SECONDS == 30.0


def test_model_filtered_claim_takes_only_the_head(store):
    a, b, c = add(store, model=None), add(store, model="sdxl"), add(store, model=None)
    w = new_worker_id()
    assert store.claim_next(w, model="sdxl") is None  # b is for sdxl, but a is first
    assert store.get(b).status == "queued"
    assert store.claim_next(w, model=None).id == a  # None: the server's default model
    assert store.claim_next(w, model=None) is None  # the head is b now, for sdxl
    assert store.claim_next(w, model="sdxl").id == b
    assert store.claim_next(w, model="other") is None
    assert store.claim_next(w).id == c  # no model given: whatever is at the head
    assert store.claim_next(w, model=None) is None  # an empty queue


def test_renew_leases_reports_the_jobs_lost(store):
    mine = new_worker_id()
    other = f"{ELSEWHERE}:1:ff"
    a, b, c, d = (add(store, f"job {i}") for i in range(4))
    store.claim_next(mine, lease_seconds=5)
    store.claim_next(mine, lease_seconds=5)
    store.claim_next(other, lease_seconds=5)
    store.claim_next(mine, lease_seconds=5)
    store.finish(d, [(png(1), 1)], {}, worker_id=mine)  # ended
    before = time.time()
    lost = store.renew_leases(mine, [a, b, c, d, "missing"], 60)
    assert lost == {c, d, "missing"}
    for job_id in (a, b):
        assert store.get(job_id).lease_until >= before + 60
    assert store.get(c).lease_until < before + 10  # the other worker's lease is untouched
    assert store.renew_leases(mine, [], 60) == set()
    store.delete(d)
    assert store.renew_leases(mine, [a, d]) == {d}


def test_an_expired_lease_is_reclaimed_and_the_old_worker_refused(store):
    job_id = add(store)
    old, new = f"{ELSEWHERE}:1:aa", new_worker_id()
    store.claim_next(old, lease_seconds=0.3)
    assert store.reclaim_expired() == 0  # the lease still holds
    assert store.claim_next(new) is None
    time.sleep(0.4)
    # A lease that ran out but was not taken back yet can still be renewed...
    assert store.renew_leases(old, [job_id], 0.2) == set()
    time.sleep(0.3)
    assert store.reclaim_expired() == 1
    back = store.get(job_id)
    assert (back.status, back.worker_id, back.lease_until, back.started_at) == (
        "queued", None, None, None)
    assert back.attempts == 1
    assert store.reclaim_expired() == 0  # once only

    with pytest.raises(JobStateError, match="no longer holds") as err:
        store.finish(job_id, [(png(2), 2)], {}, worker_id=old)  # not even while queued
    assert err.value.status == "queued"
    with pytest.raises(JobStateError):
        store.fail(job_id, "boom", "late", worker_id=old)
    again = store.claim_next(new)
    assert (again.id, again.worker_id, again.attempts) == (job_id, new, 2)
    assert store.renew_leases(old, [job_id]) == {job_id}
    for end in (
        lambda: store.finish(job_id, [(png(3), 3)], {}, worker_id=old),
        lambda: store.fail(job_id, "boom", "late", worker_id=old),
        lambda: store.mark_cancelled(job_id, worker_id=old),
        lambda: store.requeue(job_id, worker_id=old),
    ):
        with pytest.raises(JobStateError, match=f"worker '{new}' does") as err:
            end()
        assert err.value.status == "running" and err.value.code == "job_state"
    assert store.get(job_id).worker_id == new
    done = store.finish(job_id, [(png(4), 4)], {}, worker_id=new)
    assert done.status == "succeeded" and done.lease_until is None and done.worker_id == new
    assert [r.seed for r in done.results] == [4]


def test_claim_next_with_a_worker_reclaims_first(store):
    first, second = add(store, "first"), add(store, "second")
    store.claim_next(f"{ELSEWHERE}:1:aa", lease_seconds=0.05)
    time.sleep(0.1)
    job = store.claim_next(new_worker_id())
    assert (job.id, job.attempts) == (first, 2)  # back at its place, ahead of second
    assert store.get(second).status == "queued"


def test_reclaim_cancels_requested_and_fails_exhausted_jobs(store):
    cancel_me, crashing, fine = add(store, "a"), add(store, "b"), add(store, "c")
    for _ in range(3):
        store.claim_next(new_worker_id(), lease_seconds=60)
    store.cancel(cancel_me)
    with store.transaction() as conn:  # their worker died; crashing brought two down before
        conn.execute("UPDATE jobs SET worker_id = ?", (f"{HOST}:{dead_pid()}:aa",))
        conn.execute("UPDATE jobs SET attempts = 3 WHERE id = ?", (crashing,))
    assert store.reclaim_expired(max_attempts=3) == 3  # the dead pid: at once
    got = {j: store.get(j) for j in (cancel_me, crashing, fine)}
    assert got[cancel_me].status == "cancelled" and got[cancel_me].finished_at is not None
    assert (got[crashing].status, got[crashing].error_type) == ("failed", "interrupted")
    assert "3 time(s)" in got[crashing].error_message
    assert (got[fine].status, got[fine].worker_id) == ("queued", None)
    assert all(j.lease_until is None for j in got.values())


def test_recover_leaves_live_workers_alone(store):
    live_here, live_there, dead_here, unleased = (add(store, f"j{i}") for i in range(4))
    store.claim_next(new_worker_id(), lease_seconds=60)  # this process: alive
    store.claim_next(f"{ELSEWHERE}:1:aa", lease_seconds=60)
    store.claim_next(f"{HOST}:{dead_pid()}:bb", lease_seconds=60)
    store.claim_next()  # legacy: no lease at all
    assert store.recover() == 2
    status = {j: store.get(j).status for j in (live_here, live_there, dead_here, unleased)}
    assert status == {live_here: "running", live_there: "running", dead_here: "queued",
                      unleased: "queued"}


def test_the_worker_guard_needs_the_job_to_run_under_that_worker(store):
    queued, unleased = add(store, "a"), add(store, "b")
    store.cancel(queued)
    w = new_worker_id()
    with pytest.raises(JobStateError, match="cancelled"):
        store.mark_cancelled(queued, worker_id=w)
    store.claim_next()
    with pytest.raises(JobStateError, match="no longer holds"):
        store.finish(unleased, [(png(1), 1)], {}, worker_id=w)
    assert store.requeue(unleased).status == "queued"  # no worker_id: as before leases
    again = store.claim_next(w)
    back = store.requeue(again.id, worker_id=w)
    assert (back.status, back.worker_id, back.lease_until, back.attempts) == (
        "queued", None, None, 0)


# ------------------------------------------------------------- schema and plans


def test_migration_2_adds_leases_to_a_version_1_store(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    conn = sqlite3.connect(root / "bildwerk.db", isolation_level=None)
    migrate(conn, MIGRATIONS[:1])
    conn.execute(
        "INSERT INTO jobs (id, created_at, started_at, status, api, engine, request_json, "
        "attempts) VALUES ('old', 1.0, 2.0, 'running', 'native', 'local', '{}', 1)"
    )
    conn.close()
    with Store(root) as store:
        with store.transaction(write=False) as c:
            cols = {r["name"]: r["type"] for r in c.execute("PRAGMA table_info(jobs)")}
            assert (cols["worker_id"], cols["lease_until"]) == ("TEXT", "REAL")
            assert c.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        old = store.get("old")
        assert (old.status, old.worker_id, old.lease_until) == ("running", None, None)
        assert store.reclaim_expired() == 1  # left running before leases: nobody holds it
        assert store.claim_next(new_worker_id()).id == "old"


def test_claiming_and_reclaiming_read_only_the_active_jobs(store):
    plans = {
        "claim": "SELECT id, model FROM jobs WHERE status = 'queued' "
        "ORDER BY created_at, rowid LIMIT 1",
        "reclaim": "SELECT id, worker_id, lease_until FROM jobs WHERE status = 'running'",
        "renew": "UPDATE jobs SET lease_until = 1 WHERE id IN ('a', 'b') "
        "AND status = 'running' AND worker_id = 'w' RETURNING id",
    }
    with store.transaction(write=False) as conn:
        for name, sql in plans.items():
            plan = " ".join(r["detail"] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "USING" in plan and "INDEX" in plan, (name, plan)
            assert "TEMP B-TREE" not in plan, (name, plan)  # no sort: index order


# ------------------------------------------------------------ real processes

_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from bildwerk.jobs.store import Store, new_worker_id

    root, mode, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = Store(root)
    data = Path(root, "result.png").read_bytes()
    if mode == "drain":  # claim and finish until the queue is empty
        worker = new_worker_id()
        print("ready", worker, flush=True)
        while not go.exists():
            time.sleep(0.005)
        while (job := store.claim_next(worker, lease_seconds=30)) is not None:
            print("claimed", job.id, flush=True)
            store.finish(job.id, [(data, job.attempts)], {"worker": worker}, worker_id=worker)
            time.sleep(0.01)  # the work between two claims, which lets the other one in
    elif mode == "hold":  # claim one job and hang on to it until killed
        worker = sys.argv[4] if len(sys.argv) > 4 else new_worker_id()
        job = store.claim_next(worker, lease_seconds=float(sys.argv[5]) if len(sys.argv) > 5 else 30)
        print("claimed", job.id, job.lease_until, flush=True)
        time.sleep(600)
    elif mode == "take":  # wait for a job, finish it; give up once nothing is left
        worker = new_worker_id()
        print("ready", worker, flush=True)
        deadline = time.monotonic() + float(sys.argv[4])
        while time.monotonic() < deadline:
            job = store.claim_next(worker, lease_seconds=30)
            if job is not None:
                store.finish(job.id, [(data, job.attempts)], {"worker": worker},
                             worker_id=worker)
                print("finished", job.id, time.time(), flush=True)
                break
            if store.queue_depth() == 0:
                print("nothing", flush=True)
                break
            time.sleep(0.02)
        else:
            print("nothing", flush=True)
    """
)


def _spawn(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _line(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        proc.kill()
        pytest.fail(f"expected {prefix!r}, got {line!r}: {proc.communicate()[1]}")
    return line.split()[1:]


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 60) -> list[str]:
    """The rest of each one's output. Read through the same buffered stream as _line:
    communicate() would miss lines readline() already buffered."""
    outs = []
    for proc in procs:
        assert proc.stdout is not None and proc.stderr is not None
        with proc.stdout, proc.stderr:
            out, err = proc.stdout.read(), proc.stderr.read()
        assert proc.wait(timeout) == 0, err
        outs.append(out)
    return outs


def _reap(procs: list[subprocess.Popen[str]]) -> None:
    """Kill whatever a failed test left running; close the pipes."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "store"
    with Store(root):
        pass
    (root / "result.png").write_bytes(png(5))
    return root


def test_two_processes_drain_one_queue_without_sharing_a_job(root, tmp_path):
    with Store(root) as store:
        ids = {add(store, f"job {i}") for i in range(40)}
    go = tmp_path / "go"
    procs = [_spawn(root, "drain", str(go)) for _ in range(2)]
    try:
        workers = [_line(p, "ready")[0] for p in procs]
        go.touch()  # both are up: they race from the first job
        outs = _finish(procs)
    finally:
        _reap(procs)
    claims = [{ln.split()[1] for ln in out.splitlines() if ln.startswith("claimed")}
              for out in outs]
    assert claims[0] and claims[1]  # they really raced
    assert not claims[0] & claims[1]  # no job claimed by both
    assert claims[0] | claims[1] == ids
    with Store(root) as store:
        jobs = store.list_jobs(limit=None)
        assert len(jobs) == 40
        for job in jobs:
            assert (job.status, job.attempts, len(job.results)) == ("succeeded", 1, 1)
            assert job.record == {"worker": job.worker_id}  # finished by its claimer
            assert job.id in claims[workers.index(job.worker_id)]
        assert store.verify() == []


@pytest.mark.parametrize("rule", ["lease", "dead pid"])
def test_a_killed_worker_s_job_is_taken_over_once(root, tmp_path, rule):
    with Store(root) as store:
        job_id = add(store)
    if rule == "lease":  # a worker elsewhere: only its 1 s lease running out frees the job
        holder = _spawn(root, "hold", str(tmp_path / "go"), f"{ELSEWHERE}:1:ab", "1.0")
    else:  # a worker on this host with a long lease: its pid dying frees the job
        holder = _spawn(root, "hold", str(tmp_path / "go"))
    try:
        claimed, lease_until = _line(holder, "claimed")
        assert claimed == job_id
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(10) == -signal.SIGKILL
    finally:
        _reap([holder])
    killed_at = time.time()
    takers = [_spawn(root, "take", str(tmp_path / "go"), "6") for _ in range(2)]
    try:
        for t in takers:
            _line(t, "ready")
        outs = _finish(takers)
    finally:
        _reap(takers)
    finished = [ln.split() for out in outs for ln in out.splitlines() if ln.startswith("finished")]
    assert len(finished) == 1 and finished[0][1] == job_id, outs  # one taker, once
    taken_at = float(finished[0][2])
    if rule == "lease":
        assert taken_at >= float(lease_until)  # not before the lease ran out
    else:
        assert taken_at - killed_at < 5 < float(lease_until) - killed_at  # long before it
    with Store(root) as store:
        job = store.get(job_id)
        # claimed by the killed worker, re-queued once, claimed and finished by one taker
        assert (job.status, job.attempts, len(job.results)) == ("succeeded", 2, 1)
        assert job.record == {"worker": job.worker_id}
        assert store.count("running") == 0 and store.reclaim_expired() == 0
