"""The worker's batching through JobService with a tiny model: a second shape starts while the
first shape's group is full, and the batch is fitted to the loaded model (measured budget)."""

from __future__ import annotations

import asyncio
import time

import pytest

from bildwerk.engines import budget
from bildwerk.engines.registry import EngineRouter
from bildwerk.jobs.service import JobService
from bildwerk.jobs.store import Store


def _service(tmp_path, engine, **kw) -> JobService:
    return JobService(Store(tmp_path / "store"), EngineRouter(engines={"local": engine}), warmup_model=None,
                      poll_interval=0.02, **kw)


def _submit(svc, model, **fields):
    return svc.submit({"prompt": "ein See", "model": model, "seed": 1, **fields}, api="native")


def test_a_second_shape_starts_while_the_first_shapes_group_is_full(tmp_path, engine, tiny_models):
    model = str(tiny_models["sd"])
    svc = _service(tmp_path, engine, max_batch_rows=4)  # two guided images fill a call
    svc.start()
    try:
        full = _submit(svc, model, steps=150, num_images=2)  # four rows: its group is full
        deadline = time.monotonic() + 60
        while svc.progress_of(full.id) is None or svc.progress_of(full.id)["step"] < 2:
            assert time.monotonic() < deadline, "the first job did not start"
            time.sleep(0.01)
        other = _submit(svc, model, steps=3, width=96, height=64)
        done = asyncio.run(svc.wait(other.id, timeout=60))
        assert done.status == "succeeded"
        assert svc.store.get(full.id).status == "running"  # it did not wait for the full group
        svc.cancel(full.id)
        assert asyncio.run(svc.wait(full.id, timeout=60)).status == "cancelled"
    finally:
        svc.stop(drain_timeout=5)


def _until(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_stop_hands_back_at_once_the_jobs_waiting_for_their_batch(tmp_path, engine, tiny_models):
    model = str(tiny_models["sd"])
    svc = _service(tmp_path, engine, max_batch_rows=2)  # one guided image fills a call
    svc.start()
    try:
        running = _submit(svc, model, steps=150)
        _until(lambda: (svc.progress_of(running.id) or {}).get("step", 0) >= 1, "the first job to step")
        waiting = _submit(svc, model, steps=3, seed=2)
        _until(lambda: waiting.id in svc.running(), "the second job to be held")
        svc.begin_stop(drain_timeout=60)
        _until(lambda: svc.store.get(waiting.id).status == "queued", "the waiting job to go back", 10)
        assert svc.store.get(running.id).status == "running"  # the batch drains; the other did not start
        assert svc.store.get(waiting.id).attempts == 0  # no attempt: it did no work here
        svc.cancel(running.id)
    finally:
        svc.stop(drain_timeout=5)


class FakeCuda:
    """Pretend device memory: a call allocates 1 MiB a row; 1 GiB is free."""

    def __init__(self) -> None:
        self.syncs = 0
        self._peak = 0

    def synchronize(self) -> None:
        self.syncs += 1

    def reset_peak(self) -> None:
        self._peak = 0

    def allocated(self) -> int:
        return 0

    def peak(self) -> int:
        return self._peak

    def available(self) -> int:
        return 2**30


@pytest.fixture
def fake_cuda(monkeypatch, engine, tiny_models):
    probe = FakeCuda()
    model = engine.models.get(str(tiny_models["sd"]))
    hook = model.unet.register_forward_pre_hook(
        lambda _m, args: setattr(probe, "_peak", max(probe._peak, args[0].shape[0] * 2**20)))
    monkeypatch.setattr(budget, "memory_probe", lambda device: probe)
    yield probe
    hook.remove()
    model.extras.pop(budget.BUDGET, None)


def test_the_worker_fits_the_batch_to_the_loaded_model(tmp_path, engine, tiny_models, fake_cuda):
    model = str(tiny_models["sd"])
    svc = _service(tmp_path, engine)
    svc.start()
    try:
        assert asyncio.run(svc.wait(_submit(svc, model, steps=1).id, timeout=60)).status == "succeeded"
    finally:
        svc.stop(drain_timeout=5)
    limits = svc.batch_limits()
    loaded = engine.models.get(model)
    side = loaded.native_size // loaded.vae_scale_factor
    per_cell = 2**20 / (side * side)  # 1 MiB a row
    assert limits["cells_from"] == "measured"
    assert limits["max_cells"] == int(budget.FRACTION * 2**30 / per_cell)
    assert limits["memory"]["bytes_per_cell"] == pytest.approx(per_cell, rel=1e-3)
    assert svc._batcher.sync is not None  # turns are timed with the device drained

    fixed = _service(tmp_path / "b", engine, max_batch_cells=1234)
    fixed.start()
    try:
        assert asyncio.run(fixed.wait(_submit(fixed, model, steps=1).id, timeout=60)).status == "succeeded"
    finally:
        fixed.stop(drain_timeout=5)
    assert fixed.batch_limits()["cells_from"] == "operator" and fixed.batch_limits()["max_cells"] == 1234


def test_readiness_loads_through_the_engine_before_its_warm_up_generation(tmp_path, engine, tiny_models):
    """With BILDWERK_COMPILE the engine compiles its sizes in ``load``: the warm-up calls it
    before the one-step generation and before the service says ready."""
    calls: list[str] = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def load(self, source):
            calls.append(f"load ready={svc.ready}")
            return self.inner.load(source)

        def generate(self, request, **kw):
            calls.append("generate")
            return self.inner.generate(request, **kw)

    svc = JobService(Store(tmp_path / "store"), EngineRouter(engines={"local": Recording(engine)}),
                     warmup_model=str(tiny_models["sd"]), poll_interval=0.02)
    svc._warm_up()
    assert svc.ready and calls[:2] == ["load ready=False", "generate"]
