"""Pick the device and dtype: CUDA bf16 (fp16 where bf16 is missing), MPS fp16, CPU fp32."""

from __future__ import annotations

import os

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def usable_cpus() -> int:
    """The cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_device(preference: str | None = None) -> torch.device:
    pref = preference or os.environ.get("BILDWERK_DEVICE") or "auto"
    if pref != "auto":
        return torch.device(pref)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def choose_dtype(device: torch.device, preference: str | None = None) -> torch.dtype:
    pref = preference or os.environ.get("BILDWERK_DTYPE") or "auto"
    if pref != "auto":
        try:
            return _DTYPES[pref.lower()]
        except KeyError:
            raise ValueError(f"unknown dtype {pref!r}; use one of {sorted(_DTYPES)}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
