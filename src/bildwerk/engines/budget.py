"""How a loaded model's UNet calls should be batched: measured on the device, not guessed.

The batcher (app/batching.py) bounds a call by cells (rows times latent pixels). What a cell
costs depends on the network, its dtype and its attention kernels, and what may be spent on
the free memory of the device, so on CUDA both are measured once per loaded model: two eager
UNet calls at the model's own size (one and two guided pictures: 2 and 4 rows), each run once
to pick its kernels and once measured (peak allocation above the inputs), give the bytes per
cell and a fixed part; the free memory (the driver's, plus what PyTorch's caching allocator
holds unused) times ``FRACTION``, less the fixed part, over the bytes per cell is the cells a
call may hold. The rest of the memory is headroom for fragmentation, the VAE decode (between
calls, never during one) and other users of the device.

The eager UNet is measured, as a compiled one allocates no more (inductor frees early) and one
replaying CUDA graphs allocates nothing in a call (its pool is taken at recording, before the
free memory is read). With SDPA's memory-efficient kernels attention memory grows with pixels,
not their square, so cells are a fair proxy across picture sizes.

On the CPU there is nothing to measure against (``None``): the batcher keeps its defaults.
The memory functions are a ``MemoryProbe``, so a test can fake a device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from bildwerk.core.request import GenerationRequest
from bildwerk.engines.denoise import run_unet
from bildwerk.engines.speed import UNetCall, speed_of

log = logging.getLogger("bildwerk.engines")

FRACTION = 0.75  # of the free memory, for UNet activations
BUDGET = "batch_budget"  # the model's extras key: measured once per loaded model
PROBE_IMAGES = (1, 2)  # pictures per measured call (guided: 2 and 4 rows), so a small device does not run out


class MemoryProbe(Protocol):
    def synchronize(self) -> None: ...

    def reset_peak(self) -> None: ...

    def allocated(self) -> int: ...

    def peak(self) -> int:
        """The most allocated since ``reset_peak``."""
        ...

    def available(self) -> int:
        """Bytes PyTorch could still allocate."""
        ...


class CudaMemory:
    """A CUDA device's allocation counters (torch.cuda)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)

    def available(self) -> int:
        free, _total = torch.cuda.mem_get_info(self.device)
        # Blocks the caching allocator keeps but does not use are free for PyTorch, not the driver.
        return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)


def memory_probe(device: torch.device) -> MemoryProbe | None:
    """The probe of a CUDA device; None elsewhere (nothing to measure)."""
    if device.type == "cuda" and torch.cuda.is_available():
        return CudaMemory(device)
    return None


@dataclass(frozen=True)
class MemoryBudget:
    max_cells: int
    bytes_per_cell: float
    fixed_bytes: float
    available_bytes: int
    fraction: float

    def describe(self) -> dict[str, Any]:
        return {"max_cells": self.max_cells, "bytes_per_cell": round(self.bytes_per_cell, 1),
                "fixed_bytes": int(self.fixed_bytes), "available_bytes": self.available_bytes,
                "fraction": self.fraction}


@dataclass(frozen=True)
class BatchFit:
    """What the batcher should use for a loaded model."""

    budget: MemoryBudget | None = None  # None: not measured (CPU, or not asked)
    buckets: tuple[int, ...] = ()  # the row buckets its compiled calls pad to
    sync: Callable[[], None] | None = None  # waits for its device's queued work (CUDA)


def fit_batching(engine: Any, source: Any, *, measure: bool = True, memory: MemoryProbe | None = None,
                 fraction: float = FRACTION) -> BatchFit:
    """For the model ``source`` names, loaded already by the local ``engine``: its row buckets,
    a device sync and (``measure``) its memory budget. Other engines: nothing to fit."""
    from bildwerk.engines.diffusers_engine import DiffusersEngine

    if not isinstance(engine, DiffusersEngine):
        return BatchFit()
    model = engine.models.get(source)
    speed = speed_of(model)
    buckets = speed.row_buckets if speed is not None and speed.compiled else ()
    probe = memory or memory_probe(model.device)
    sync = probe.synchronize if probe is not None else None
    budget = measure_budget(engine, model, source, probe, fraction) if measure and probe is not None else None
    return BatchFit(budget, buckets, sync)


def measure_budget(engine: Any, model: Any, source: Any, memory: MemoryProbe,
                   fraction: float = FRACTION) -> MemoryBudget | None:
    """The cells one UNet call of ``model`` may hold (see the module's text); kept in the
    model's extras. None when the measure makes no sense (no growth with the rows)."""
    kept = model.extras.get(BUDGET)
    if isinstance(kept, MemoryBudget) and kept.fraction == fraction:
        return kept
    (c1, b1), (c2, b2) = (_activation(engine, model, source, n, memory) for n in PROBE_IMAGES)
    per_cell = (b2 - b1) / (c2 - c1)
    if per_cell <= 0:
        log.warning("activation memory did not grow with the rows (%d then %d bytes); keeping the "
                    "default batch cells", b1, b2)
        return None
    fixed = max(0.0, b1 - per_cell * c1)
    available = memory.available()
    cells = max(1, int((fraction * available - fixed) / per_cell))
    budget = MemoryBudget(cells, per_cell, fixed, available, fraction)
    model.extras[BUDGET] = budget
    log.info("batch budget for %s: %d cells (%.0f bytes a cell, %.1f GiB free)", model.name, cells,
             per_cell, available / 2**30)
    return budget


def _activation(engine: Any, model: Any, source: Any, images: int, memory: MemoryProbe) -> tuple[int, int]:
    """Cells of one call of ``images`` pictures at the model's size, and the bytes it allocated
    beyond its inputs."""
    size = model.native_size
    job = engine.prepare(GenerationRequest(prompt="budget", steps=2, width=size, height=size,
                                           num_images=images, guidance=5.0, seed=0), source=source)
    speed = speed_of(model)
    call = UNetCall(model.pipe.unet, attention=speed.attention if speed is not None else "auto")
    inputs = [job.state.unet_inputs()]
    with torch.inference_mode():
        run_unet(call, inputs)  # the first call of a shape picks kernels and takes their workspaces
        memory.synchronize()
        memory.reset_peak()
        base = memory.allocated()
        run_unet(call, inputs)
        memory.synchronize()
        used = memory.peak() - base
    return job.cells, used
