"""The memory budget of UNet calls, from faked CUDA memory numbers around real (tiny) calls."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bildwerk.engines.budget import BUDGET, FRACTION, fit_batching

GIB = 2**30


class FakeCudaMemory:
    """Allocation counters of a pretend device: a UNet call of r rows peaks at
    ``fixed + per_row * r`` above what was allocated; counted by a hook on the real UNet."""

    def __init__(self, unet, *, per_row: int, fixed: int, available: int) -> None:
        self.per_row, self.fixed, self._available = per_row, fixed, available
        self.base, self._peak, self.syncs = 5 * GIB, 5 * GIB, 0
        self.rows_seen: list[int] = []
        self._hook = unet.register_forward_pre_hook(self._call)

    def _call(self, _module, args) -> None:
        rows = args[0].shape[0]
        self.rows_seen.append(rows)
        self._peak = max(self._peak, self.base + self.fixed + self.per_row * rows)

    def close(self) -> None:
        self._hook.remove()

    def synchronize(self) -> None:
        self.syncs += 1

    def reset_peak(self) -> None:
        self._peak = self.base

    def allocated(self) -> int:
        return self.base

    def peak(self) -> int:
        return self._peak

    def available(self) -> int:
        return self._available


@pytest.fixture
def sd(engine, tiny_models):
    ref = str(tiny_models["sd"])
    model = engine.models.get(ref)
    yield ref, model
    model.extras.pop(BUDGET, None)  # the session's engine is shared: no budget leaks into other tests


def test_the_budget_follows_the_measured_activations_and_the_free_memory(engine, sd):
    ref, model = sd
    memory = FakeCudaMemory(model.unet, per_row=40 * 2**20, fixed=300 * 2**20, available=80 * GIB)
    try:
        fit = fit_batching(engine, ref, memory=memory)
    finally:
        memory.close()
    side = model.native_size // model.vae_scale_factor
    per_cell = 40 * 2**20 / (side * side)
    assert memory.rows_seen == [2, 2, 4, 4]  # each size once to pick kernels, once measured
    assert fit.budget is not None
    assert fit.budget.bytes_per_cell == pytest.approx(per_cell)
    assert fit.budget.fixed_bytes == pytest.approx(300 * 2**20)
    assert fit.budget.max_cells == int((FRACTION * 80 * GIB - 300 * 2**20) / per_cell)
    assert fit.sync is not None and fit.buckets == ()  # eager model: no row buckets
    # Half the free memory: about half the cells (the fixed part counts once).
    model.extras.pop(BUDGET)
    small = FakeCudaMemory(model.unet, per_row=40 * 2**20, fixed=300 * 2**20, available=40 * GIB)
    try:
        half = fit_batching(engine, ref, memory=small).budget
    finally:
        small.close()
    assert half is not None and half.max_cells < fit.budget.max_cells / 2


def test_no_budget_on_the_cpu_nor_when_not_asked(engine, sd):
    ref, model = sd
    fit = fit_batching(engine, ref)
    assert fit.budget is None and fit.sync is None  # CPU: nothing to measure; batcher defaults stay
    memory = FakeCudaMemory(model.unet, per_row=1, fixed=0, available=GIB)
    try:
        assert fit_batching(engine, ref, memory=memory, measure=False).budget is None
    finally:
        memory.close()
    assert memory.rows_seen == []


def test_a_compiled_model_brings_its_row_buckets(engine, sd):
    from bildwerk.engines.speed import SPEED

    ref, model = sd
    eager = model.extras[SPEED]
    model.extras[SPEED] = replace(eager, compile="unet", row_buckets=(4, 8, 16))
    try:
        assert fit_batching(engine, ref, measure=False).buckets == (4, 8, 16)
    finally:
        model.extras[SPEED] = eager
