"""Cross-request continuous batching: many started tasks, one network call per step.

Tasks whose prepared state has the same ``batch_key`` (same model, latent shape and
conditioning shape) share a UNet call, each at its own timestep with its own scheduler. A task
joins at the next step and leaves when it is done; cancel is checked per task before every
step. A call is bounded by rows (images, twice with guidance) and by cells (rows times latent
pixels, a proxy for activation memory), so a burst of large pictures cannot take all memory;
when several shapes are active, their groups take turns, so mixed sizes do not block each other.

The engine's UNet is batch-invariant (engines/invariance.py), so a picture is bit-identical
whether its request ran alone or batched (tests/engine/test_batching_exact.py).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from bildwerk.app.generate import Task
from bildwerk.core.errors import GenerationCancelled
from bildwerk.engines.base import BatchEngine, CancelToken, GenerationResult

# Defaults measured on 2 CPU cores with the default model (docs/benchmarks.md): per-row UNet
# cost stops falling near 32 rows; 32 rows of 64x64 latents is SD 1.5's 512 px at batch 16.
DEFAULT_MAX_ROWS = 32
DEFAULT_MAX_CELLS = 32 * 64 * 64


@dataclass
class Slot:
    key: str  # the caller's name for the task (a job id)
    task: Task
    cancel: CancelToken | None = None


@dataclass
class Outcome:
    """A task that left the batch: its result, or why it has none."""

    key: str
    task: Task
    result: GenerationResult | None = None
    error: BaseException | None = None


@dataclass
class ContinuousBatcher:
    max_rows: int = DEFAULT_MAX_ROWS
    max_cells: int = DEFAULT_MAX_CELLS
    slots: list[Slot] = field(default_factory=list)  # oldest first: added in order, removed in place
    _turn: int = 0
    last_rows: int = 0  # rows in the last network call (for metrics)

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_cells < 1:
            raise ValueError("max_rows and max_cells must be at least 1")

    def __len__(self) -> int:
        return len(self.slots)

    def keys(self) -> list[str]:
        return [s.key for s in self.slots]

    @property
    def model_ref(self) -> str | None:
        """The model every active task uses (the worker admits only tasks for it)."""
        return self.slots[0].task.spec.request.model if self.slots else None

    def rows(self) -> int:
        return sum(s.task.prepared.rows for s in self.slots if s.task.prepared is not None)

    def cells(self) -> int:
        return sum(s.task.prepared.cells for s in self.slots if s.task.prepared is not None)

    def has_room(self) -> bool:
        return self.rows() < self.max_rows and self.cells() < self.max_cells

    def add(self, key: str, task: Task, cancel: CancelToken | None = None) -> None:
        if not task.batched:
            raise ValueError("only tasks with denoising steps left join a batch")
        self.slots.append(Slot(key, task, cancel))

    def remove(self, key: str) -> Slot | None:
        for i, s in enumerate(self.slots):
            if s.key == key:
                return self.slots.pop(i)
        return None

    def _group(self) -> list[Slot]:
        """The next group to step (groups take turns, oldest first), bounded in rows and cells."""
        groups: dict[Hashable, list[Slot]] = {}
        for s in self.slots:
            groups.setdefault(s.task.prepared.batch_key, []).append(s)  # type: ignore[union-attr]
        members = list(groups.values())[self._turn % len(groups)]
        self._turn += 1
        chosen: list[Slot] = []
        rows = cells = 0
        for s in members:
            p = s.task.prepared
            assert p is not None
            if chosen and (rows + p.rows > self.max_rows or cells + p.cells > self.max_cells):
                continue
            chosen.append(s)
            rows, cells = rows + p.rows, cells + p.cells
        return chosen

    def step(self) -> list[Outcome]:
        """Drop cancelled tasks, advance one group by one step, finish the tasks it completed."""
        out: list[Outcome] = []
        for s in list(self.slots):
            if s.cancel is not None and s.cancel.is_set():
                self.slots.remove(s)
                done, total = s.task.prepared.steps  # type: ignore[union-attr]
                out.append(Outcome(s.key, s.task, error=GenerationCancelled(
                    f"cancelled after {done} of {total} steps")))
        if not self.slots:
            return out
        group = self._group()
        self.last_rows = sum(s.task.prepared.rows for s in group)  # type: ignore[union-attr]
        engine = group[0].task.engine
        assert isinstance(engine, BatchEngine)
        try:
            engine.step([s.task.prepared for s in group])  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the call failed for every member (e.g. OOM)
            for s in group:
                self.slots.remove(s)
                out.append(Outcome(s.key, s.task, error=exc))
            return out
        for s in group:
            if s.task.done:
                self.slots.remove(s)
                try:
                    out.append(Outcome(s.key, s.task, result=s.task.finish()))
                except Exception as exc:  # noqa: BLE001 - one bad decode fails one task
                    out.append(Outcome(s.key, s.task, error=exc))
        return out
