"""Pools through the job queue (issue 15, the REST face's engine): the queue executor on a real
store and job service with the tiny random-weight model, the pool service's states, pause,
resume, cancel and recovery. No item is ever made twice; gates are off (pool/gates.py has its
own tests), so every picture is accepted unless its job fails."""

from __future__ import annotations

import csv
import time

import pytest

from bildwerk.core.errors import BildwerkError, InvalidRequestError
from bildwerk.jobs.service import JobService
from bildwerk.jobs.store import PoolStateError, QueueFull, Store
from bildwerk.pool.plan import PoolPlan
from bildwerk.pool.render import item_spec
from bildwerk.pool.service import PoolService


def plan(*, name: str = "station", per_prompt: tuple[int, ...] = (2, 1, 3), steps: int = 2, **settings) -> PoolPlan:
    """Two kinds: interiors (the first two prompts), exteriors (the rest)."""
    prompts = [{"prompt": text, "seed": 10 * i + 1, "images": n}
               for i, (text, n) in enumerate(zip(("a station hall", "a ticket office", "a station square",
                                                   "a bus stop", "a taxi rank"), per_prompt, strict=False))]
    inner, outer = prompts[:2], prompts[2:]
    kinds = [{"kind": "interiors", "share": 50, "images": sum(p["images"] for p in inner),
              "locations": [{"name": "Halle", "prompts": inner}]},
             {"kind": "exteriors", "share": 50, "images": sum(p["images"] for p in outer),
              "locations": [{"name": "Vorplatz", "prompts": outer}]}]
    return PoolPlan.from_data({"pool": name, "topic": "Bahnhof", "images": max(1, sum(per_prompt)), "kinds": kinds,
                               "settings": {"width": 64, "height": 64, "steps": steps, **settings},
                               "gates": {"nsfw": False, "dedupe": False}})


def make_service(root, model, *, window=2, max_queued=64):
    store = Store(root / "store")
    jobs = JobService(store, warmup_model=None, poll_interval=0.05, max_queued=max_queued)
    jobs.start()
    pools = PoolService(store, jobs, window=window, gates=lambda p: False, report=False, default_model=model,
                        poll=0.2)
    pools.start()
    return pools


def close(pools):
    pools.begin_stop()
    pools.jobs.stop(drain_timeout=5)
    pools.stop(timeout=10)
    pools.store.close()


@pytest.fixture
def svc(tmp_path, tiny_models):
    pools = make_service(tmp_path, str(tiny_models["sd"]))
    yield pools
    close(pools)


def wait_until(cond, timeout=90.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_idle(pools, pool_id, timeout=90.0):
    wait_until(lambda: not pools.running_here(pool_id), timeout, f"pool {pool_id} to stop")
    return pools.get(pool_id)


def jobs_by_item(pools, pool_id):
    return pools.store.pool_item_jobs(pool_id)


def assert_each_item_made_once(pools, pool_id, p: PoolPlan):
    made = {item: [j for j, s in jobs if s == "succeeded"] for item, jobs in jobs_by_item(pools, pool_id).items()}
    assert all(len(js) <= 1 for js in made.values()), made  # never twice
    folder = pools._folder(pool_id)
    accepted = {r.id for r in folder.rows(status="accepted")}
    assert accepted == {i for i, js in made.items() if js}
    assert accepted == {i.id for i in p.items()}


def test_a_pool_runs_through_the_queue_into_its_folder(svc):
    p = plan()
    row = svc.create(p)
    assert row.status == "draft" and row.name == "station"
    active_at_submit = []
    submit = svc.jobs.submit

    def counting_submit(spec, **kw):
        active_at_submit.append(len(svc.store.pool_active_jobs(row.id)))
        return submit(spec, **kw)

    svc.jobs.submit = counting_submit
    seen = []
    emit = svc._emit
    svc._emit = lambda pool_id, event, data: (seen.append((event, data)), emit(pool_id, event, data))
    assert svc.start_pool(row.id).status == "running"
    done = wait_idle(svc, row.id)
    assert done.status == "complete" and done.error is None
    assert max(active_at_submit) < svc.window  # never more than the window in the queue
    assert_each_item_made_once(svc, row.id, p)
    counts = svc.counts(row.id, p)
    assert counts["accepted"] == 6 and [k["accepted"] for k in counts["kinds"]] == [3, 3]
    # Pool jobs are ordinary jobs of the history, tagged with the pool and the item.
    listed = svc.store.list_jobs(pool_id=row.id)
    assert len(listed) == 6 and {j.api for j in listed} == {"pool"}
    assert {j.pool_item for j in listed} == {i.id for i in p.items()}
    assert svc.store.list_jobs(api="pool", limit=None) and svc.store.count(pool_id=row.id) == 6
    # metadata.csv (the imagefolder) names exactly the accepted pictures.
    folder = svc.folder_path(row.id)
    rows = list(csv.DictReader((folder / "metadata.csv").open(encoding="utf-8")))
    assert {r["id"] for r in rows} == {i.id for i in p.items()}
    assert all((folder / r["file_name"]).is_file() and r["topic"] == "Bahnhof" for r in rows)
    # The events: the pool's status changes and every picture of the run.
    names = [(e, d.get("type") or d.get("status")) for e, d in seen]
    assert names[0] == ("status", "running") and names[-1] == ("status", "complete")
    progress = [d for e, d in seen if e == "progress"]
    assert progress[0]["type"] == "start" and progress[-1]["outcome"] == "complete"
    assert sum(e["type"] == "image" for e in progress) == 6 and progress[-1]["accepted"] == 6
    kept, gap = svc.events_after(row.id, 0)  # an ended run keeps its last events for late streams
    assert gap and 0 < len(kept) <= 8 and kept[-1][2]["status"] == "complete"
    assert svc.events_after(row.id, kept[-2][0]) == ([kept[-1]], False)
    # The images page and the export both see what the folder has.
    page, total = svc.images(row.id, kind="exteriors", location="Vorplatz", limit=2)
    assert total == 3 and len(page) == 2 and all(r.kind == "exteriors" for r in page)
    assert svc.image_file(row.id, page[0].id).read_bytes()[:4] == b"\x89PNG"
    assert svc.image_file(row.id, "0" * 16) is None and svc.image_file(row.id, "../../x") is None
    metadata, files = svc.export_files(row.id)
    assert len(files) == 6 and metadata.decode().count("\n") == 7


def test_other_users_get_in_and_a_full_queue_is_waited_out(tmp_path, tiny_models):
    model = str(tiny_models["sd"])
    pools = make_service(tmp_path, model, window=2, max_queued=4)
    try:
        # Three jobs of other users: the pool gets one slot until they are done.
        others = [pools.jobs.submit({"prompt": f"someone else {i}", "model": model, "width": 64, "height": 64,
                                     "steps": 4}, api="native") for i in range(3)]
        refused = []
        submit = pools.jobs.submit

        def watching_submit(spec, **kw):
            try:
                return submit(spec, **kw)
            except QueueFull:
                refused.append(kw.get("pool_item"))
                raise

        pools.jobs.submit = watching_submit
        p = plan(per_prompt=(3, 2, 3), steps=3)
        row = pools.create(p)
        pools.start_pool(row.id)
        wait_until(lambda: all(pools.store.get(j.id).status == "succeeded" for j in others), what="the others")
        assert refused, "the queue was never full for the pool"
        assert pools.running_here(row.id)
        # The pool holds at most its window of the queue's four places: another user gets in.
        late = submit({"prompt": "a late user", "model": model, "width": 64, "height": 64, "steps": 2},
                      api="native")
        assert wait_idle(pools, row.id).status == "complete"
        assert_each_item_made_once(pools, row.id, p)
        assert pools.store.get(late.id).status == "succeeded"
    finally:
        close(pools)


def test_pause_then_resume_ends_complete_with_no_item_made_twice(svc):
    p = plan(per_prompt=(3, 2, 3))
    row = svc.create(p)
    svc.start_pool(row.id)
    wait_until(lambda: svc.counts(row.id, p)["accepted"] >= 2, what="two pictures")
    assert svc.pause_pool(row.id).status == "paused"
    with pytest.raises(PoolStateError, match="it is paused"):
        svc.pause_pool(row.id)
    paused = wait_idle(svc, row.id)
    assert paused.status == "paused"
    # What was queued ran to its end and is in the folder; nothing is left in the queue.
    assert svc.store.pool_active_jobs(row.id) == []
    made = sum(1 for jobs in jobs_by_item(svc, row.id).values() for _, s in jobs if s == "succeeded")
    assert svc.counts(row.id, p)["accepted"] == made < 8
    assert svc.resume_pool(row.id).status == "running"
    assert wait_idle(svc, row.id).status == "complete"
    assert_each_item_made_once(svc, row.id, p)
    assert svc.store.pool_job_counts(row.id) == {"succeeded": 8}
    runs = svc._folder(row.id).runs()
    assert [r["outcome"] for r in runs] == ["stopped", "complete"] and sum(r["made"] for r in runs) == 8


def test_cancel_stops_and_cancels_the_queued_jobs(svc):
    p = plan(per_prompt=(4, 4, 4), steps=8)
    row = svc.create(p)
    svc.start_pool(row.id)
    wait_until(lambda: svc.counts(row.id, p)["accepted"] >= 1, what="a picture")
    assert svc.cancel_pool(row.id).status == "cancelled"
    done = wait_idle(svc, row.id)
    assert done.status == "cancelled"
    wait_until(lambda: svc.store.pool_active_jobs(row.id) == [], what="the pool's jobs to end")
    counts = svc.store.pool_job_counts(row.id)
    assert counts.get("succeeded", 0) < 12 and set(counts) <= {"succeeded", "cancelled"}
    submitted = sum(counts.values())
    time.sleep(0.5)
    assert sum(svc.store.pool_job_counts(row.id).values()) == submitted  # nothing new after the cancel
    for act in (svc.resume_pool, svc.start_pool, svc.pause_pool, svc.cancel_pool):
        with pytest.raises(PoolStateError, match="it is cancelled"):
            act(row.id)


def test_a_job_made_before_is_settled_from_the_store_not_made_again(svc):
    # What a server that died after its jobs ran (but before their pictures reached the
    # folder) leaves: succeeded and queued jobs of the pool. The run takes them as they are.
    p = plan()
    row = svc.create(p)
    items = list(p.items())
    spec_plan = p.model_copy(update={"settings": p.settings.model_copy(update={"model": svc.default_model})})
    before = [svc.jobs.submit(item_spec(spec_plan, i), api="pool", pool_id=row.id, pool_item=i.id)
              for i in items[:3]]
    wait_until(lambda: svc.store.get(before[0].id).status == "succeeded", what="an early job")
    svc.start_pool(row.id)
    assert wait_idle(svc, row.id).status == "complete"
    assert_each_item_made_once(svc, row.id, p)
    assert sum(svc.store.pool_job_counts(row.id).values()) == 6  # the three early ones were not redone


def test_a_restart_mid_pool_resumes_by_itself_and_repeats_nothing(tmp_path, tiny_models):
    model = str(tiny_models["sd"])
    p = plan(per_prompt=(3, 2, 3))
    first = make_service(tmp_path, model)
    try:
        row = first.create(p)
        first.start_pool(row.id)
        wait_until(lambda: first.counts(row.id, p)["accepted"] >= 2, what="two pictures")
    finally:
        close(first)  # a stop mid-pool: it stays running in the store, its queued jobs stay queued
    assert Store(tmp_path / "store").get_pool(row.id).status == "running"
    second = make_service(tmp_path, model)
    try:
        assert second.running_here(row.id)  # resumed at start
        assert wait_idle(second, row.id).status == "complete"
        assert_each_item_made_once(second, row.id, p)
        assert second.store.pool_job_counts(row.id).get("succeeded") == 8
    finally:
        close(second)


def test_a_failed_job_is_a_failed_item_and_a_spare_seed_tops_the_kind_up(svc):
    start = svc.jobs.generator.start

    def failing_start(spec, **kw):
        if "boom" in spec.request.prompt:
            raise BildwerkError("this prompt always fails")
        return start(spec, **kw)

    svc.jobs.generator.start = failing_start
    p = PoolPlan.from_data({"pool": "fails", "topic": "x", "images": 2, "kinds": [
        {"kind": "items", "share": 1, "images": 2, "locations": [{"name": "Tisch", "prompts": [
            {"prompt": "a boom box", "seed": 1, "images": 1}, {"prompt": "a cup", "seed": 5, "images": 1}]}]}],
        "settings": {"width": 64, "height": 64, "steps": 2}, "gates": {"nsfw": False, "dedupe": False}})
    row = svc.create(p)
    svc.start_pool(row.id)
    assert wait_idle(svc, row.id).status == "complete"
    # Round 1: the boom box fails, the cup is made; round 2 takes the next spare seed (the boom
    # box's, failing again), round 3 the cup's next seed, which fills the kind.
    counts = svc.counts(row.id, p)["kinds"][0]
    assert (counts["accepted"], counts["failed"]) == (2, 2)
    assert svc.store.pool_job_counts(row.id) == {"succeeded": 2, "failed": 2}
    failed = svc._folder(row.id).rows(status="failed")
    assert all("this prompt always fails" in r.reason and r.prompt == "a boom box" for r in failed)
    assert sorted(r.seed for r in failed) == [1, 2]


def test_plans_are_checked_and_edited_only_when_not_running(svc, tiny_models):
    with pytest.raises(InvalidRequestError, match="width"):
        svc.create(plan(width=100))
    with pytest.raises(BildwerkError, match="model"):
        svc.create(plan(model="/no/such/model"))
    with pytest.raises(InvalidRequestError, match="translate"):
        svc.create(plan(translate="sideways"))
    with pytest.raises(BildwerkError, match="no prompts"):
        svc.create(plan(per_prompt=(0, 0, 0)))
    row = svc.create(plan())
    edited = plan(name="renamed", per_prompt=(1, 1, 1))
    assert svc.update_plan(row.id, edited).name == "renamed"  # a draft may change anything
    svc.start_pool(row.id)
    with pytest.raises(PoolStateError, match="running"):
        svc.update_plan(row.id, edited)
    with pytest.raises(PoolStateError, match="it is running"):
        svc.start_pool(row.id)
    svc.pause_pool(row.id)
    with pytest.raises(InvalidRequestError, match="name cannot change"):
        svc.update_plan(row.id, plan(name="again", per_prompt=(1, 1, 1)))
    more = plan(name="renamed", per_prompt=(1, 1, 2))  # one more picture of the last prompt
    assert svc.update_plan(row.id, more).plan["images"] == 4
    wait_idle(svc, row.id)
    svc.resume_pool(row.id)
    assert wait_idle(svc, row.id).status == "complete"
    assert_each_item_made_once(svc, row.id, more)
    with pytest.raises(PoolStateError, match="complete"):
        svc.update_plan(row.id, more)


def test_idle_folders_are_closed_beyond_the_bound_and_reopened_when_read(svc, monkeypatch):
    import bildwerk.pool.service as service

    monkeypatch.setattr(service, "MAX_OPEN_FOLDERS", 1)
    monkeypatch.setattr(service, "FOLDER_IDLE_SECONDS", 0.0)
    rows = [svc.create(plan(name=f"p{i}")) for i in range(3)]
    for row in rows:
        assert svc._folder(row.id, plan(name=f"p{rows.index(row)}")) is not None
    assert list(svc._folders) == [rows[-1].id]  # the others were closed
    assert svc.counts(rows[0].id, plan(name="p0"))["accepted"] == 0  # and open again when read
    assert rows[0].id in svc._folders and len(svc._folders) == 1
