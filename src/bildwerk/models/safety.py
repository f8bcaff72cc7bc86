"""Weights are loaded from safetensors only.

Pickle checkpoints (``.bin``/``.ckpt``/``.pt``) can run arbitrary code when
loaded (InvokeAI CVE-2024-12029, A1111 #5942). The format is decided by the
file's first bytes, never by its name: a pickle renamed to ``.safetensors``
is refused too.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Literal

from bildwerk.core.errors import UnsafeModelError

WeightFormat = Literal["safetensors", "pickle", "gguf", "unknown"]

WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".gguf"}
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


def sniff_weight_format(path: Path) -> WeightFormat:
    """Classify a weights file by its magic bytes."""
    with path.open("rb") as f:
        head = f.read(16)
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= _MAX_SAFETENSORS_HEADER and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):  # torch.save zip archive: holds a pickle
        return "pickle"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head.startswith(b"GGUF"):
        return "gguf"
    return "unknown"


def model_components(folder: Path) -> list[str]:
    """The components model_index.json of a diffusers folder names with a class (not null)."""
    index = folder / "model_index.json"
    try:
        data = json.loads(index.read_text("utf-8"))
    except (OSError, ValueError):
        return []
    return [
        k
        for k, v in data.items()
        if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] is not None
    ]


def check_model_folder(folder: Path) -> None:
    """Refuse a diffusers folder unless every weight-bearing component is real safetensors."""
    problems: list[str] = []
    for comp in model_components(folder):
        comp_dir = folder / comp
        if not comp_dir.is_dir():
            continue
        weights = [p for p in sorted(comp_dir.iterdir()) if p.suffix in WEIGHT_SUFFIXES]
        if not weights:
            continue  # tokenizers, schedulers: configs only
        safe = []
        for p in weights:
            fmt = sniff_weight_format(p)
            if p.suffix == ".safetensors" and fmt != "safetensors":
                problems.append(f"{comp}/{p.name} is named .safetensors but its bytes are {fmt}")
            elif fmt == "safetensors":
                safe.append(p)
        if not safe:
            names = ", ".join(p.name for p in weights)
            problems.append(f"{comp} has only non-safetensors weights ({names})")
    if problems:
        raise UnsafeModelError(
            f"refusing to load {folder}: "
            + "; ".join(problems)
            + ". bildwerk loads safetensors only, because pickle checkpoints can run code. "
            "Convert the model once where you trust it, e.g. "
            "`DiffusionPipeline.from_pretrained(path).save_pretrained(out, safe_serialization=True)`."
        )
