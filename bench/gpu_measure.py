"""How bench/gpu_speed.py measures one thing: time, peak memory, FLOPs, host syncs, differences.

Everything works on the CPU too (the ``--tiny`` runs of the test suite): what only CUDA has
(peak memory, sync debugging) is None there.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

# One timing of one call, the device drained around it: the engine's own (its warm-up uses it).
from bildwerk.engines.speed import timed as seconds

GIB = 1024**3


def cuda() -> bool:
    return torch.cuda.is_available()


def drain() -> None:
    """Wait for the device's queue: a host clock read after this sees all the work done."""
    if cuda():
        torch.cuda.synchronize()


@contextlib.contextmanager
def peak_memory(into: dict[str, Any]) -> Iterator[None]:
    """The allocator's peak over the block (weights included) and what was held before it,
    in GiB, into ``into``; None on the CPU."""
    if not cuda():
        into.update(peak_memory_gib=None, memory_before_gib=None)
        yield
        return
    drain()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    yield
    drain()
    into.update(peak_memory_gib=torch.cuda.max_memory_allocated() / GIB, memory_before_gib=before / GIB)


def time_calls(fn: Callable[[], Any], *, warmup: int, runs: int) -> dict[str, Any]:
    """``warmup`` calls (the first compiles, where anything does), then the median of ``runs``
    timed calls; the peak memory is the timed calls'. ``compile_seconds`` (first call minus a
    steady one) is set by the caller, which knows whether anything compiled."""
    first = [seconds(fn) for _ in range(warmup)]
    out: dict[str, Any] = {}
    with peak_memory(out):
        times = [seconds(fn) for _ in range(runs)]
    out.update(seconds=statistics.median(times), runs=times, first_call_seconds=first[0] if first else None,
               warmup_seconds=first)
    return out


def count_host_syncs(fn: Callable[[], Any]) -> int | None:
    """How many times ``fn`` made the host wait for the device (torch's sync debug mode
    "warn", one warning per synchronising call); None on the CPU."""
    if not cuda():
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message).lower() for w in caught)


# -- FLOPs ------------------------------------------------------------------------------------
def _count(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def unet_call_flops(unet: Any, *, width: int, height: int, rows: int, scale: int) -> int:
    """FLOPs of one UNet call on ``rows`` latent rows (2 per guided picture) of a picture of
    width x height (``scale``: the VAE's factor), counted by torch's FlopCounterMode."""
    cfg = unet.config
    p = next(unet.parameters())
    g = torch.Generator("cpu").manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g).to(device=p.device, dtype=p.dtype)

    sample = rand(rows, int(cfg.in_channels), height // scale, width // scale)
    text = rand(rows, 77, int(cfg.cross_attention_dim))
    kwargs: dict[str, Any] = {}
    if cfg.addition_embed_type == "text_time":
        pooled = int(cfg.projection_class_embeddings_input_dim) - 6 * int(cfg.addition_time_embed_dim)
        kwargs["added_cond_kwargs"] = {"text_embeds": rand(rows, pooled), "time_ids": rand(rows, 6)}
    t = torch.full((rows,), 500, device=p.device)
    return _count(lambda: unet(sample, t, encoder_hidden_states=text, return_dict=False, **kwargs))


def vae_decode_flops(vae: Any, *, width: int, height: int, scale: int) -> int:
    p = next(vae.parameters())
    z = torch.randn((1, int(vae.config.latent_channels), height // scale, width // scale),
                    generator=torch.Generator("cpu").manual_seed(0)).to(device=p.device, dtype=p.dtype)
    return _count(lambda: vae.decode(z, return_dict=False))


# -- differences ------------------------------------------------------------------------------
def picture_diff(a: Any, b: Any) -> dict[str, Any]:
    """Two PIL pictures of one size: the largest and the mean absolute difference (0-255)."""
    x = np.asarray(a.convert("RGB"), dtype=np.int16)
    y = np.asarray(b.convert("RGB"), dtype=np.int16)
    if x.shape != y.shape:
        return {"error": f"sizes differ: {a.size} vs {b.size}"}
    d = np.abs(x - y)
    return {"pixel_max_abs": int(d.max()), "pixel_mean_abs": float(d.mean())}


def latent_diff(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """Largest absolute and relative L2 difference of two latents; ``finite`` False when
    either holds NaN or infinity (fp16 random weights may overflow)."""
    x, y = a.detach().float().cpu(), b.detach().float().cpu()
    finite = bool(torch.isfinite(x).all() and torch.isfinite(y).all())
    if not finite:
        return {"finite": False, "latent_max_abs": None, "latent_rel_l2": None}
    norm = float(y.norm()) or 1.0
    return {"finite": True, "latent_max_abs": float((x - y).abs().max()),
            "latent_rel_l2": float((x - y).norm()) / norm}


# -- the machine ------------------------------------------------------------------------------
def gpu_info() -> dict[str, Any]:
    """The GPU's name, memory and driver (nvidia-smi where it is, else torch); {} without CUDA."""
    if not cuda():
        return {}
    props = torch.cuda.get_device_properties(0)
    info: dict[str, Any] = {"gpu": props.name, "gpu_memory_gib": props.total_memory / GIB,
                            "compute_capability": f"{props.major}.{props.minor}",
                            "multiprocessors": props.multi_processor_count, "cuda": torch.version.cuda,
                            "driver": None}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            pass
    if info["driver"] is None:
        get = getattr(torch.cuda, "driver_version", None)  # not in every torch
        info["driver"] = str(get()) if callable(get) else None
    return info
