"""Resumable checkpoints.

A checkpoint is a folder ``checkpoints/step-N`` holding the trainable modules
(safetensors, via ``save_pretrained``) and ``state.pt`` with the optimizer, LR
schedule, EMA and RNG states. ``state.pt`` is read back with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

_STEP = re.compile(r"^step-(\d+)$")


def start_run(cfg: Any) -> tuple[torch.device, Path]:
    """What every training run does first: threads, device, its folder and its settings file."""
    from bildwerk.models.devices import choose_device

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = choose_device(cfg.device)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "train_config.json").write_text(cfg.model_dump_json(indent=2), "utf-8")
    return device, cfg.out


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step}"


def latest_checkpoint(out: Path) -> Path | None:
    root = out / "checkpoints"
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / "DONE").is_file()]
    return max(found)[1] if found else None


def checkpoint_step(path: Path) -> int:
    m = _STEP.match(path.name)
    if not m:
        raise ValueError(f"not a checkpoint folder: {path}")
    return int(m.group(1))


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])


def save_state(folder: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "state.pt")
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str), "utf-8")
    # Written last: a checkpoint without DONE was interrupted and is ignored on resume.
    (folder / "DONE").write_text("ok\n", "utf-8")


def load_state(folder: Path) -> dict[str, Any]:
    return torch.load(folder / "state.pt", weights_only=True, map_location="cpu")


def prune(out: Path, keep: int) -> None:
    root = out / "checkpoints"
    if not root.is_dir():
        return
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)))
    for _step, p in found[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
