"""Running a plan into a folder with the local executor on the embedded default model: the
manifest, metadata.csv, gates and top-ups, the clean stop, and failures that stop a run."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

import numpy as np
import pytest

from bildwerk.pool.folder import PoolFolder
from bildwerk.pool.local import LocalExecutor
from bildwerk.pool.plan import PoolKind, PoolLocation, PoolPlan, PoolPrompt, PoolSettings
from bildwerk.pool.render import Rendered
from bildwerk.pool.run import MAX_FAILURES_IN_A_ROW, PoolFailing, PoolRunner


def small_plan(per_prompt: int = 2, **settings) -> PoolPlan:
    kinds = []
    for k, names in (("interiors", ["clinic", "pharmacy"]), ("items", ["stethoscope"])):
        locs = [PoolLocation(name=n, prompts=[PoolPrompt(prompt=f"a {n}, {light}", seed=1000 * i + 100 * j,
                                                         images=per_prompt)
                                              for j, light in enumerate(["soft light", "at night"])])
                for i, n in enumerate(names)]
        kinds.append(PoolKind(kind=k, share=50, images=len(locs) * 2 * per_prompt, locations=locs))
    return PoolPlan(pool="clinic-test", topic="Medicine", images=sum(k.images for k in kinds), kinds=kinds,
                    settings=PoolSettings(width=64, height=64, steps=2, **settings))


@dataclass
class Verdict:
    reason: str | None
    scores: dict = field(default_factory=dict)
    embedding: np.ndarray | None = None


class EveryThird:
    """A gate that rejects every third picture it sees."""

    def __init__(self) -> None:
        self.seen = 0

    def restore(self, kind, embeddings, ids=None) -> None:
        pass

    def judge(self, kind, image, item_id) -> Verdict:
        self.seen += 1
        return Verdict("test gate: every third" if self.seen % 3 == 0 else None, {"n": self.seen})


@pytest.fixture(scope="module")
def executor():
    return LocalExecutor()


def test_a_plan_runs_into_an_imagefolder_train_accepts(tmp_path, executor):
    from bildwerk.train.data import validate_image_folder

    plan = small_plan()
    with PoolFolder(tmp_path / "pool", plan) as folder:
        summary = PoolRunner(folder, executor, gates=False, report=False).run()
        rows = folder.rows()
    assert summary.outcome == "complete"
    assert summary.accepted == {"interiors": 8, "items": 4}
    assert sorted(r.id for r in rows) == sorted(i.id for i in plan.items())
    with open(tmp_path / "pool" / "metadata.csv", encoding="utf-8") as f:
        meta = list(csv.DictReader(f))
    assert len(meta) == 12
    assert {m["kind"] for m in meta} == {"interiors", "items"}
    assert all((tmp_path / "pool" / m["file_name"]).is_file() for m in meta)
    assert {m["model"] for m in meta} == {"bildwerk-default"}
    assert validate_image_folder(tmp_path / "pool").ok


def test_a_second_run_makes_nothing_again(tmp_path, executor):
    plan = small_plan(per_prompt=1)
    with PoolFolder(tmp_path / "pool", plan) as folder:
        PoolRunner(folder, executor, gates=False, report=False).run(limit=3)
        first = {r.id: r.ended for r in folder.rows()}
        assert len(first) == 3
        again = PoolRunner(folder, executor, gates=False, report=False).run()
        rows = folder.rows()
    assert again.made == len(list(plan.items())) - 3
    assert {r.id: r.ended for r in rows if r.id in first} == first  # the first three untouched
    assert len(rows) == len({r.id for r in rows}) == len(list(plan.items()))


def test_rejected_pictures_are_kept_aside_and_topped_up(tmp_path, executor):
    plan = small_plan(per_prompt=1)
    with PoolFolder(tmp_path / "pool", plan) as folder:
        summary = PoolRunner(folder, executor, gates=EveryThird(), report=False).run()
        rejected = folder.rows(status="rejected")
        accepted = folder.rows(status="accepted")
    assert summary.outcome == "complete"
    assert summary.accepted == {"interiors": 4, "items": 2}
    assert rejected and all(r.reason == "test gate: every third" for r in rejected)
    assert all((tmp_path / "pool" / r.file).is_file() and r.file.startswith("rejected/") for r in rejected)
    planned = {i.id: i for i in plan.items()}
    spares = [r for r in accepted if r.id not in planned]
    assert len(spares) == len(rejected)  # each rejected picture was replaced by a new seed
    assert all(r.seed not in {i.seed for i in planned.values()} for r in spares)


def test_stop_ends_after_the_pictures_in_flight(tmp_path, executor):
    plan = small_plan()
    made = []
    with PoolFolder(tmp_path / "pool", plan) as folder:
        two_at_a_time = LocalExecutor(executor.generator, max_rows=4)  # guided: 2 rows an image
        summary = PoolRunner(folder, two_at_a_time, gates=False, report=False,
                             on_event=lambda e: made.append(e) if e.type == "image" else None
                             ).run(stop=lambda: len(made) >= 1)
        n = len(folder.rows())
    assert summary.outcome == "stopped"
    assert 1 <= n <= 3  # the first picture, and those in flight with it


class Broken:
    name = "broken"

    def render(self, plan, items, stop):
        for item in items:
            if stop():
                return
            yield Rendered(item, error="engine_error: out of memory")


def test_a_run_that_only_fails_stops_and_says_why(tmp_path):
    plan = small_plan(per_prompt=10)
    with PoolFolder(tmp_path / "pool", plan) as folder:
        with pytest.raises(PoolFailing, match="out of memory"):
            PoolRunner(folder, Broken(), gates=False, report=False).run()
        assert len(folder.rows(status="failed")) == MAX_FAILURES_IN_A_ROW


def test_a_folder_keeps_its_pool(tmp_path):
    from bildwerk.core.errors import InvalidRequestError

    PoolFolder(tmp_path / "pool", small_plan()).close()
    other = small_plan().model_copy(update={"pool": "another-pool"})
    with pytest.raises(InvalidRequestError, match="holds the pool 'clinic-test'"):
        PoolFolder(tmp_path / "pool", other)
