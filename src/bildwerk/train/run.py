"""The run skeleton the UNet and VAE trainers share.

A run (``train_unet``, ``train_vae``) is: :func:`~bildwerk.train.checkpoints.start_run`
(threads, device, folder, settings file), build the model, resume from the latest
finished checkpoint (:meth:`RunState.restore`), then :func:`run_steps`: for each
step set the learning rate (:func:`warmup_cosine`), take the trainer's step, log it
(:func:`open_progress`: Rich bar with loss, it/s and ETA, plus ``train_log.jsonl``),
and write a checkpoint every ``checkpoint_every`` steps and at the last
(:meth:`RunState.save`: ``checkpoints/step-N`` with ``state.pt``, ``meta.json`` and
``DONE``, older ones pruned). What a trainer saves of its model, and its final
export, stay with the trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bildwerk.train.checkpoints import (
    checkpoint_dir,
    load_state,
    prune,
    rng_state,
    save_state,
    set_rng_state,
)
from bildwerk.train.precision import MixedPrecision
from bildwerk.train.progress import TrainProgress

LOG_NAME = "train_log.jsonl"


def warmup_cosine(step: int, *, base: float, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``base`` down to ``floor * base``."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return base * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / total)))


def open_progress(
    out: Path,
    total: int,
    start: int,
    *,
    description: str,
    show: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> TrainProgress:
    """The run's progress bar and its JSON-lines log, ``out/train_log.jsonl``."""
    return TrainProgress(total, start, out / LOG_NAME, description=description, show=show, callback=callback)


@dataclass
class RunState:
    """What every checkpoint holds besides the model: optimizer, data and torch RNG, step, loss scaler."""

    out: Path
    optimizer: torch.optim.Optimizer
    data_rng: torch.Generator
    amp: MixedPrecision

    def restore(self, checkpoint: Path) -> tuple[dict[str, Any], int]:
        """Load the shared state of ``checkpoint``; returns its whole state (for the
        trainer's own entries) and the step to continue from."""
        state = load_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_rng.set_state(state["data_rng"])
        set_rng_state(state["rng"])
        self.amp.load_state_dict(state.get("scaler"))
        return state, int(state["step"])

    def save(self, step: int, loss: float, extra: dict[str, Any], *, keep: int) -> Path:
        """Finish ``checkpoints/step-N`` (the trainer has written its model there): the state
        with the trainer's ``extra`` entries, meta.json, DONE; then keep the newest ``keep``."""
        folder = checkpoint_dir(self.out, step)
        state = {"optimizer": self.optimizer.state_dict(), "data_rng": self.data_rng.get_state(),
                 "rng": rng_state(), "step": step, "scaler": self.amp.state_dict(), **extra}
        save_state(folder, state, {"step": step, "loss": loss, "precision": self.amp.name})
        prune(self.out, keep)
        return folder


def run_steps(
    *,
    start: int,
    total: int,
    optimizer: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    train_step: Callable[[int], tuple[float, dict[str, Any]]],
    progress: TrainProgress,
    checkpoint_every: int,
    checkpoint: Callable[[int, float, bool], None],
    after_step: Callable[[int, bool], None] | None = None,
) -> None:
    """Steps ``start`` .. ``total - 1``; closes ``progress`` however it ends.

    ``train_step(step)`` returns the loss and extra fields for the log (logged before
    ``lr``); ``checkpoint(done, loss, last)`` runs every ``checkpoint_every`` steps and
    after the last; ``after_step(done, last)`` after that (sample grids).
    """
    try:
        for step in range(start, total):
            lr = lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, extra = train_step(step)
            done = step + 1
            progress.update(done, loss, **extra, lr=lr)
            last = done == total
            if done % checkpoint_every == 0 or last:
                checkpoint(done, loss, last)
            if after_step is not None:
                after_step(done, last)
    finally:
        progress.close()
