"""Pick the device and dtype: CUDA bf16 (fp16 where bf16 is missing), MPS fp16, CPU fp32."""

from __future__ import annotations

import os

import torch

from bildwerk.core.threads import thread_count

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def apply_threads() -> int:
    """Give torch the configured thread count (core/threads.py); returns it."""
    n = thread_count()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


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
