"""The batcher's queues and turns, with fake prepared tasks (no network): per-shape groups and
waiting queues, time-fair turns between shapes, cancel while waiting, row buckets, hold bounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from bildwerk.app.batching import ContinuousBatcher
from bildwerk.app.generate import Task
from bildwerk.core.errors import GenerationCancelled


@dataclass
class FakeJob:
    shape: str
    total: int
    rows: int = 2
    index: int = 0
    request: object = None

    @property
    def done(self) -> bool:
        return self.index >= self.total

    @property
    def steps(self) -> tuple[int, int]:
        return (self.index, self.total)

    @property
    def batch_key(self) -> str:
        return self.shape

    @property
    def cells(self) -> int:
        return self.rows * 64


@dataclass
class FakeEngine:
    """Steps fake jobs; each call advances a fake clock by its shape's cost and is logged."""

    cost: dict[str, float] = field(default_factory=dict)
    now: float = 0.0
    calls: list[tuple[str, list[int]]] = field(default_factory=list)  # (shape, ids of the jobs stepped)

    def generate(self, request, **kw):  # pragma: no cover - part of the Engine protocol only
        raise NotImplementedError

    def prepare(self, request, **kw):  # pragma: no cover
        raise NotImplementedError

    def step(self, batch) -> None:
        self.calls.append((batch[0].shape, [id(j) for j in batch]))
        self.now += self.cost.get(batch[0].shape, 1.0)
        for job in batch:
            job.index += 1

    def finish(self, job):
        return SimpleNamespace(job=job)

    def clock(self) -> float:
        return self.now


class Flag:
    def __init__(self) -> None:
        self.on = False

    def is_set(self) -> bool:
        return self.on


def _batcher(engine: FakeEngine, **kw) -> ContinuousBatcher:
    return ContinuousBatcher(clock=engine.clock, **kw)


def _add(batcher, engine, key, shape, steps, rows=2, cancel=None) -> FakeJob:
    job = FakeJob(shape, steps, rows)
    batcher.add(key, Task(spec=None, engine=engine, prepared=job), cancel)  # type: ignore[arg-type]
    return job


def _run(batcher, until=None, limit=1000) -> list[str]:
    done = []
    for _ in range(limit):
        if not len(batcher) or (until is not None and until()):
            break
        done += [o.key for o in batcher.step()]
    return done


def test_a_full_group_of_one_shape_does_not_stop_another_shape():
    engine = FakeEngine()
    b = _batcher(engine, max_rows=4, max_cells=10_000)
    a1, a2 = _add(b, engine, "a1", "512", 20), _add(b, engine, "a2", "512", 20)  # the group is full
    assert b.has_room()  # room to hold more: another shape can start
    a3 = _add(b, engine, "a3", "512", 20)
    lone = _add(b, engine, "b", "768", 3)
    b.step()
    b.step()
    assert lone.index == 1 and a1.index == a2.index == 1  # both groups stepped, one call each
    assert b.waiting() == ["a3"] and a3.index == 0  # its own group is full: it waits, prepared
    assert [len(ids) for _, ids in engine.calls] == [2, 1]  # a3 never made a call too big
    assert "b" in _run(b, until=lambda: lone.done or a1.done) and not a1.done


def test_waiting_tasks_join_their_group_oldest_first_as_rows_free():
    engine = FakeEngine()
    b = _batcher(engine, max_rows=4)
    _add(b, engine, "first", "s", 2, rows=4)
    late = [_add(b, engine, k, "s", 5) for k in ("w1", "w2", "w3")]
    b.step()
    assert b.waiting() == ["w1", "w2", "w3"]
    assert [o.key for o in b.step()] == ["first"]  # its rows are free from the next step on
    b.step()
    assert [j.index for j in late] == [1, 1, 0]
    assert b.waiting() == ["w3"]  # w1 and w2 fill the four rows; w3 waits for one to finish
    assert _run(b) == ["w1", "w2", "w3"]


def test_a_lone_quick_job_is_not_held_back_by_a_slow_groups_long_steps():
    # Steps of the 1024 px group take ten times longer: by time, the lone 512 px job makes about
    # ten steps for each of theirs (equal turns would give it one).
    engine = FakeEngine(cost={"1024": 10.0, "512": 1.0})
    b = _batcher(engine, max_rows=8)
    big = [_add(b, engine, f"big{i}", "1024", 30) for i in range(4)]
    b.step()  # the group runs alone for a while
    small = _add(b, engine, "small", "512", 10)
    _run(b, until=lambda: small.done)
    assert small.done and big[0].index <= 3
    assert engine.calls[1][0] == "512"  # the new shape went first: its request waits no step


def test_a_lone_slow_job_gets_half_the_time_next_to_a_busy_quick_group():
    engine = FakeEngine(cost={"1024": 10.0, "512": 1.0})
    b = _batcher(engine, max_rows=8)
    [_add(b, engine, f"q{i}", "512", 1000) for i in range(4)]
    slow = _add(b, engine, "slow", "1024", 1000)
    _run(b, limit=110)
    time_of = {"512": 0.0, "1024": 0.0}
    for shape, _ in engine.calls:
        time_of[shape] += engine.cost[shape]
    assert slow.index >= 9 and abs(time_of["512"] - time_of["1024"]) <= 10.0


def test_a_cancelled_waiting_task_leaves_with_generation_cancelled():
    engine = FakeEngine()
    b = _batcher(engine, max_rows=2)
    running = _add(b, engine, "running", "s", 5)
    flag = Flag()
    waiting = _add(b, engine, "waiting", "s", 5, cancel=flag)
    b.step()
    assert b.waiting() == ["waiting"]
    flag.on = True
    out = b.step()
    assert [o.key for o in out] == ["waiting"] and isinstance(out[0].error, GenerationCancelled)
    assert "after 0 of 5 steps" in str(out[0].error)
    assert b.keys() == ["running"] and running.index == 2 and waiting.index == 0


def test_row_buckets_trim_an_overshooting_call_and_rotate_its_members():
    engine = FakeEngine()
    b = _batcher(engine, max_rows=32, buckets=(2, 4, 8, 12, 16, 24, 32))
    jobs = [_add(b, engine, f"j{i}", "s", 100) for i in range(9)]  # 18 rows: padded to 24
    for _ in range(9):
        b.step()
        assert b.last_rows == 16  # the bucket below, full
    assert sorted(j.index for j in jobs) == [8] * 9  # each left out once in nine calls

    plain = FakeEngine()
    nb = _batcher(plain, max_rows=32)
    [_add(nb, plain, f"j{i}", "s", 100) for i in range(9)]
    nb.step()
    assert nb.last_rows == 18  # no buckets: every member steps every turn


def test_row_buckets_keep_a_call_whose_trim_would_not_pay():
    engine = FakeEngine()
    b = _batcher(engine, max_rows=32, buckets=(2, 4, 8))
    _add(b, engine, "a", "s", 10, rows=2)
    _add(b, engine, "b", "s", 10, rows=1)  # 3 rows pad to 4; 2 rows would be one call for less
    b.step()
    assert b.last_rows == 3


@pytest.mark.parametrize(("kw", "held"), [({"max_rows": 4}, 4), ({"max_rows": 4, "max_in_flight": 2}, 2),
                                          ({"max_rows": 1}, 1)])
def test_a_worker_holds_a_bounded_number_of_jobs(kw, held):
    engine = FakeEngine()
    b = _batcher(engine, **kw)
    n = 0
    while b.has_room():
        _add(b, engine, str(n), "s", 3)
        n += 1
    assert n == held  # 2 x 4 rows of 2-row jobs; an explicit count; batching off: one job


def test_only_tasks_without_room_are_waiting_to_start():
    """What a stop hands back: a task added just now whose group has room steps in the drain
    (clients see it running); one whose group is full, and that never stepped, goes back."""
    engine = FakeEngine()
    b = _batcher(engine, max_rows=4)
    _add(b, engine, "running", "s", 5)
    b.step()
    _add(b, engine, "fits", "s", 5)  # two more rows: room, though it has made no step yet
    _add(b, engine, "full", "s", 5)
    assert b.waiting_to_start() == ["full"]
