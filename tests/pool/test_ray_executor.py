"""The Ray executor: the same pictures and ids as the local one, on a Ray cluster.

The tests that need Ray share one local cluster this module starts (2 CPUs and one logical
GPU, so the GPU sizing path is scheduled too; the actors still compute on CPU, as
BILDWERK_DEVICE=cpu reaches them) and are ``extended`` (Ray's start and each run's actor start
take seconds). The sizing rules and the actor class itself are checked in-process, no Ray.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bildwerk.app.generate import Generator
from bildwerk.core.errors import InvalidRequestError, ModelNotFoundError, PromptBackendError
from bildwerk.pool.folder import PoolFolder
from bildwerk.pool.local import LocalExecutor
from bildwerk.pool.plan import PoolPlan
from bildwerk.pool.ray_executor import PoolActor, RayExecutor, RayExecutorError, size_actors
from bildwerk.pool.run import PoolRunner

NEVER = lambda: False  # noqa: E731


def make_plan(model: str | Path, *, pool: str = "ray-test", topup: bool = True,
              broken: bool = False) -> PoolPlan:
    """8 images in two kinds (or 6 with two prompts the breaking generator fails)."""
    ward = [{"prompt": "a hospital ward", "seed": 11, "images": 2},
            {"prompt": "an empty ward at night", "seed": 40, "images": 2}]
    if broken:
        ward = [{"prompt": "a hospital ward", "seed": 11, "images": 2},
                {"prompt": "a ward BREAK-soft", "seed": 60, "images": 1},
                {"prompt": "a ward BREAK-hard", "seed": 70, "images": 1}]
    return PoolPlan.from_data({
        "pool": pool, "topic": "hospital", "images": 8,
        "kinds": [
            {"kind": "interiors", "share": 50, "images": 4,
             "locations": [{"name": "ward", "prompts": ward}]},
            {"kind": "exteriors", "share": 50, "images": 2 if broken else 4,
             "locations": [{"name": "вход", "prompts": [  # any script travels (ids, prompts)
                 {"prompt": "вход в больницу", "seed": 5, "images": 2 if broken else 4}]}]},
        ],
        "settings": {"model": str(model), "width": 64, "height": 64, "steps": 2, "translate": "off"},
        "gates": {"topup": topup},
    })


class BreakingGenerator(Generator):
    """Fails the items whose prompt says so: one with a bildwerk error (the shared render
    path catches it), one with a plain exception (escapes it: the actor must contain it)."""

    def start(self, spec, **kw):
        if "BREAK-soft" in spec.request.prompt:
            raise PromptBackendError("injected soft failure")
        if "BREAK-hard" in spec.request.prompt:
            raise RuntimeError("injected hard failure")
        return super().start(spec, **kw)


class CrashingGenerator(Generator):
    """Kills its own process on the item that says so (a segfault, the OOM killer)."""

    def start(self, spec, **kw):
        if "CRASH" in spec.request.prompt:
            import os

            os._exit(1)
        return super().start(spec, **kw)


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    from bildwerk.models.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("ray-tiny") / "sd", "sd")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module, started (and shut down) by a RayExecutor."""
    pytest.importorskip("ray.data")
    owner = RayExecutor(init_kwargs={"num_gpus": 1})
    t0 = time.perf_counter()
    owner.connect()
    print(f"ray start: {time.perf_counter() - t0:.1f} s")
    # The test module's classes (BreakingGenerator) travel by value: workers cannot import it.
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield owner
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    owner.close()
    import ray

    assert not ray.is_initialized()


# ---------------------------------------------------------------------- no Ray needed


def test_sizing_gives_each_actor_a_gpu_or_a_fair_share():
    s = size_actors(actors=2, cluster_cpus=16, cluster_gpus=4)
    assert (s.num_gpus, s.num_cpus, s.threads) == (1.0, 1.0, 1)
    s = size_actors(actors=4, cluster_cpus=16, cluster_gpus=2)  # two engines per GPU
    assert s.num_gpus == 0.5
    s = size_actors(actors=3, cluster_cpus=16, cluster_gpus=2)  # 0.5 each: all three fit on 2 GPUs
    assert s.num_gpus == 0.5
    s = size_actors(actors=2, cluster_cpus=16, cluster_gpus=4, num_gpus=0)  # CPU asked for
    assert (s.num_gpus, s.num_cpus, s.threads) == (0.0, 8.0, 8)


def test_sizing_on_cpus_keeps_actors_times_threads_within_the_cores():
    s = size_actors(actors=1, cluster_cpus=2, cluster_gpus=0)
    assert (s.num_gpus, s.num_cpus, s.threads) == (0.0, 2.0, 2)
    s = size_actors(actors=2, cluster_cpus=2, cluster_gpus=0)
    assert (s.num_cpus, s.threads) == (1.0, 1)
    s = size_actors(actors=3, cluster_cpus=2, cluster_gpus=0)  # at least one each (Ray queues the rest)
    assert (s.num_cpus, s.threads) == (1.0, 1)
    s = size_actors(actors=2, cluster_cpus=64, cluster_gpus=0, node_cpus=8)  # never more than a node has
    assert s.num_cpus == 8.0
    s = size_actors(actors=2, cluster_cpus=8, cluster_gpus=0, num_cpus=3, model_threads=2)
    assert (s.num_cpus, s.threads) == (3.0, 2)


@pytest.mark.parametrize("kw, word", [
    ({"actors": 0}, "actors"),
    ({"num_gpus": 2}, "one GPU"),
    ({"num_gpus": 0.5, "cluster_gpus": 0}, "no GPUs"),
    ({"num_cpus": 0}, "CPUs"),
    ({"model_threads": 0}, "threads"),
])
def test_sizing_refuses_what_cannot_run(kw, word):
    args = {"actors": 1, "cluster_cpus": 4, "cluster_gpus": 1, **kw}
    with pytest.raises(InvalidRequestError, match=word):
        size_actors(**args)


def test_executor_options_are_checked_when_made():
    for kw in ({"actors": 0}, {"batch_size": 0}, {"max_rows": 0}, {"max_errored_blocks": -1}):
        with pytest.raises(InvalidRequestError):
            RayExecutor(**kw)


def test_the_actor_renders_a_batch_in_process_and_contains_failures(tiny_sd):
    """The class Ray runs, called here: one row per item, a failing item is a row with its
    error, and the pictures are the local executor's."""
    pa = pytest.importorskip("pyarrow")
    plan = make_plan(tiny_sd, broken=True)
    items = list(plan.items())
    actor = PoolActor(plan.dump(), generator_factory=BreakingGenerator)
    assert actor.fatal is None
    batch = pa.table({"id": [i.id for i in items], "item": [i.model_dump_json() for i in items]})
    out = actor(batch).to_pylist()
    assert sorted(r["id"] for r in out) == sorted(i.id for i in items)
    by_prompt = {i.id: i.prompt for i in items}
    errors = {by_prompt[r["id"]]: r["error"] for r in out if r["error"]}
    assert errors == {"a ward BREAK-soft": "prompt_backend: injected soft failure",
                      "a ward BREAK-hard": "RuntimeError: injected hard failure"}
    made = {r["id"]: pixels(r["png"]) for r in out if r["png"]}
    assert len(made) == len(items) - 2
    fine = [i for i in items if i.id in made]
    local = {r.item.id: np.asarray(r.image) for r in LocalExecutor().render(plan, fine, NEVER)}
    assert local.keys() == made.keys()
    for k in made:
        assert np.array_equal(made[k], local[k])
    assert not any(r["fatal"] for r in out)


def test_check_on_a_local_cluster_checks_the_model_here(tiny_sd, tmp_path):
    RayExecutor().check(make_plan(tiny_sd))  # nothing starts: no Ray needed
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        RayExecutor().check(make_plan(tmp_path / "no-such-model"))
    RayExecutor(address="auto").check(make_plan(tmp_path / "no-such-model"))  # the cluster's actors check it


def test_an_actor_that_cannot_load_the_model_answers_fatal_rows(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow as pa

    plan = make_plan(tmp_path / "no-such-model")
    actor = PoolActor(plan.dump())
    assert actor.fatal and actor.fatal.startswith("model_not_found")
    item = next(plan.items())
    rows = actor(pa.table({"id": [item.id], "item": [item.model_dump_json()]})).to_pylist()
    assert rows[0]["fatal"] and rows[0]["png"] is None and rows[0]["error"] == actor.fatal


# ---------------------------------------------------------------------- on a Ray cluster


@pytest.mark.extended
def test_ray_finishes_a_half_local_pool_with_the_same_pictures_and_ids(cluster, tiny_sd, tmp_path):
    plan = make_plan(tiny_sd)
    planned = [i.id for i in plan.items()]
    # One thread in both (this process's torch runs one; so do the actors): a picture's bits
    # depend on the thread count, not on the executor.
    reference = {r.item.id: np.asarray(r.image) for r in LocalExecutor().render(plan, list(plan.items()), NEVER)}
    assert len(reference) == len(planned) == 8

    folder = PoolFolder(tmp_path / "pool", plan)
    first = PoolRunner(folder, LocalExecutor(), gates=False, report=False).run(limit=3)
    assert (first.outcome, first.made) == ("stopped", 3)

    ray_ex = RayExecutor(actors=2, num_gpus=0, model_threads=1, batch_size=2)
    t0 = time.perf_counter()
    second = PoolRunner(folder, ray_ex, gates=False, report=False).run()
    print(f"ray run of 5 items: {time.perf_counter() - t0:.1f} s")
    assert (second.outcome, second.made) == ("complete", 5)
    assert (ray_ex.sizing.actors, ray_ex.sizing.num_gpus, ray_ex.sizing.num_cpus, ray_ex.sizing.threads) == (2, 0, 1, 1)

    rows = folder.rows()
    assert sorted(r.id for r in rows) == sorted(planned)  # every planned id, exactly once
    assert Counter(r.executor for r in rows) == {"local": 3, "ray": 5}
    assert {r.status for r in rows} == {"accepted"}
    for r in rows:
        png = (folder.root / r.file).read_bytes()
        assert np.array_equal(pixels(png), reference[r.id]), (r.executor, r.id)
        assert r.model_prompt == next(i.prompt for i in plan.items() if i.id == r.id)
    assert [run["executor"] for run in folder.runs()] == ["local", "ray"]

    with open(folder.root / "metadata.csv", newline="", encoding="utf-8") as f:
        meta = list(csv.DictReader(f))
    assert sorted(m["id"] for m in meta) == sorted(planned)
    for m in meta:
        assert (folder.root / m["file_name"]).is_file()
        assert m["file_name"] == f"images/{m['kind']}/{m['id']}.png"
    folder.close()


@pytest.mark.extended
def test_a_failing_item_is_recorded_failed_and_the_others_are_made(cluster, tiny_sd, tmp_path):
    plan = make_plan(tiny_sd, broken=True, topup=False)
    folder = PoolFolder(tmp_path / "pool", plan)
    ray_ex = RayExecutor(num_gpus=0, model_threads=1, batch_size=8, generator_factory=BreakingGenerator)
    summary = PoolRunner(folder, ray_ex, gates=False, report=False).run()
    assert (summary.outcome, summary.made) == ("short", 4)
    failed = {r.prompt: r.reason for r in folder.rows(status="failed")}
    assert failed == {"a ward BREAK-soft": "prompt_backend: injected soft failure",
                      "a ward BREAK-hard": "RuntimeError: injected hard failure"}
    assert len(folder.rows(status="accepted")) == 4

    # A resume (here local, with a generator that does not break) makes exactly the failed two.
    again = PoolRunner(folder, LocalExecutor(), gates=False, report=False).run()
    assert (again.outcome, again.made) == ("complete", 2)
    rows = folder.rows()
    assert sorted(r.id for r in rows) == sorted(i.id for i in plan.items())
    assert {r.status for r in rows} == {"accepted"}
    folder.close()


@pytest.mark.extended
def test_a_stopped_ray_run_records_only_what_came_back_and_a_resume_completes(cluster, tiny_sd, tmp_path):
    plan = make_plan(tiny_sd)
    folder = PoolFolder(tmp_path / "pool", plan)
    ray_ex = RayExecutor(num_gpus=0, model_threads=1, batch_size=1)
    pictures: list[str] = []  # the caller's stop (Ctrl-C in the CLI) turns true after two pictures

    def on_event(ev):
        if ev.type == "image":
            pictures.append(ev.item.id)

    t0 = time.perf_counter()
    stopped = PoolRunner(folder, ray_ex, gates=False, report=False, on_event=on_event).run(
        stop=lambda: len(pictures) >= 2)
    print(f"stopped ray run: {time.perf_counter() - t0:.1f} s")
    assert (stopped.outcome, stopped.made) == ("stopped", 2)
    assert len(folder.rows()) == 2  # items in flight in the cluster were dropped, not recorded

    done = PoolRunner(folder, LocalExecutor(), gates=False, report=False).run()
    assert (done.outcome, done.made) == ("complete", 6)
    rows = folder.rows()
    assert sorted(r.id for r in rows) == sorted(i.id for i in plan.items())
    assert Counter(r.executor for r in rows) == {"ray": 2, "local": 6}
    folder.close()


@pytest.mark.extended
def test_gpu_actors_share_the_gpu_and_a_model_no_actor_can_load_fails_the_run(cluster, tmp_path):
    """Sized from the cluster (one logical GPU): two actors at half a GPU each; the model is
    missing on the cluster, so the run fails with that error and records nothing."""
    plan = make_plan(tmp_path / "no-such-model")
    folder = PoolFolder(tmp_path / "pool", plan)
    ray_ex = RayExecutor(actors=2, batch_size=4)
    with pytest.raises(RayExecutorError, match="model_not_found"):
        PoolRunner(folder, ray_ex, gates=False, report=False).run()
    assert (ray_ex.sizing.actors, ray_ex.sizing.num_gpus, ray_ex.sizing.num_cpus) == (2, 0.5, 1.0)
    assert folder.rows() == []
    folder.close()


@pytest.mark.extended
@pytest.mark.timeout(300)
def test_an_item_that_kills_its_actor_fails_the_run_after_bounded_retries(cluster, tiny_sd, tmp_path):
    """Ray Data alone would restart the actor and retry the batch forever; the executor bounds
    it, the run fails with one error, and what came back before is kept."""
    plan = PoolPlan.from_data({
        **make_plan(tiny_sd).dump(), "pool": "ray-crash",
        "kinds": [{"kind": "interiors", "share": 100, "images": 3, "locations": [{"name": "ward", "prompts": [
            {"prompt": "a hospital ward", "seed": 11, "images": 2}, {"prompt": "CRASH", "seed": 1, "images": 1}]}]}],
    })
    folder = PoolFolder(tmp_path / "pool", plan)
    ray_ex = RayExecutor(num_gpus=0, model_threads=1, batch_size=1, max_task_retries=0,
                         generator_factory=CrashingGenerator)
    with pytest.raises(RayExecutorError, match="the Ray run failed"):
        PoolRunner(folder, ray_ex, gates=False, report=False).run()
    rows = folder.rows()
    assert all(r.status == "accepted" and r.prompt != "CRASH" for r in rows)
    folder.close()
