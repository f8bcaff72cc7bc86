"""Pick the device and dtype: CUDA bf16 (fp16 where bf16 is missing), MPS fp16, CPU fp32."""

from __future__ import annotations

import os

import torch

from bildwerk.core.errors import InvalidRequestError, NotConfiguredError
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


def choose_device(preference: str | None = None, *, option: str = "device") -> torch.device:
    """The device to run on: ``preference``, else BILDWERK_DEVICE, else the best there is.
    A device that is not here fails with one line that says what to use (before any model
    loads, when the caller checks early); ``option`` is how the caller's users name the
    setting (the CLI: ``--device``)."""
    said, fix = f"{option} {preference}", f"use {option} cpu, or leave {option} unset to use what there is"
    pref = preference
    if not pref:
        pref = os.environ.get("BILDWERK_DEVICE") or "auto"
        said, fix = f"BILDWERK_DEVICE={pref}", "set BILDWERK_DEVICE=cpu, or unset it to use what there is"
    if pref != "auto":
        try:
            device = torch.device(pref)
        except RuntimeError:
            raise InvalidRequestError(f"{said}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
        _check_available(device, said, fix)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _check_available(device: torch.device, said: str, fix: str) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise NotConfiguredError(f"{said}: no CUDA device here (torch {torch.__version__}); {fix}")
        if device.index is not None and device.index >= count:
            raise NotConfiguredError(f"{said}: this machine has {count} CUDA device(s), cuda:0 to "
                                     f"cuda:{count - 1}; {fix}")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if not (mps and mps.is_available()):
            raise NotConfiguredError(f"{said}: no Apple MPS device here (torch {torch.__version__}); {fix}")


def choose_dtype(device: torch.device, preference: str | None = None) -> torch.dtype:
    pref = preference or os.environ.get("BILDWERK_DTYPE") or "auto"
    if pref != "auto":
        try:
            return _DTYPES[pref.lower()]
        except KeyError:
            raise InvalidRequestError(f"unknown dtype {pref!r}; use auto or one of "
                                      f"{', '.join(sorted(_DTYPES))}") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
