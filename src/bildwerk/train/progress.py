"""Training progress: loss, it/s and ETA on a Rich bar, plus a JSON-lines log on disk."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """Shows and logs training; ``callback`` lets tests and services observe without a terminal."""

    def __init__(
        self,
        total: int,
        start: int,
        log_path: Path,
        *,
        description: str = "training",
        console: Console | None = None,
        show: bool = True,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.total, self.start = total, start
        self.log_path = log_path
        self.callback = callback
        self._t0 = time.perf_counter()
        self._ema_loss: float | None = None
        self._bar = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
            )
            if show
            else None
        )
        self._task = None
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, completed=start, loss="-", rate="")

    def update(self, step: int, loss: float, **extra: Any) -> None:
        self._ema_loss = loss if self._ema_loss is None else 0.98 * self._ema_loss + 0.02 * loss
        elapsed = time.perf_counter() - self._t0
        rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else None
        entry = {"step": step, "loss": loss, "loss_smooth": self._ema_loss, "it_s": rate, "eta_s": eta, **extra}
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=step, loss=f"{self._ema_loss:.4f}", rate=f"{rate:.2f} it/s")
        if self.callback:
            self.callback(entry)

    def note(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
