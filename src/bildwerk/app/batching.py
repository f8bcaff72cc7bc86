"""Cross-request continuous batching: many started tasks, one network call per step.

Tasks whose prepared state has the same ``batch_key`` (same model, latent shape and
conditioning shape) form a *group* and share a UNet call, each at its own timestep with its own
scheduler. A task joins at the next step and leaves when it is done; cancel is checked per task
(stepping or waiting) before every step.

Bounds. A group (one call) holds at most ``max_rows`` rows (images, twice with guidance) and
``max_cells`` cells (rows times latent pixels, a proxy for the call's activation memory; on CUDA
the worker measures what a cell costs and sets it from the free memory, engines/budget.py).
The cells bound is per call, not summed over groups: activations live only during a call and
one call runs at a time, while what a held task keeps between calls (its latents and prompt
encodings) is small next to them. Each shape has its own queue: a task whose group is full
waits, prepared, and joins oldest first as rows free up, so a full group of 512 px pictures
never stops a 768 px request from starting. A task larger than the bounds runs alone. How much
one worker holds (stepping and waiting) is bounded too, ``hold`` calls' worth of rows and cells
(``HOLD_FACTOR``) or ``max_in_flight`` jobs, so one worker does not claim the whole queue from
other worker processes sharing the store; with ``max_rows=1`` (batching off) it holds one job.

Turns: groups share the device's *time* equally, not its turns. Each group has a share (the
seconds its calls took); the group with the least share steps next, so a lone 512 px request
next to a group of 1024 px pictures whose steps take ten times longer makes about ten steps per
step of theirs, and neither starves. A group that appears starts at the least share of those
present (no credit for the time it was absent) and, on a tie, goes before groups that just
stepped, so a new shape's first step comes at once. Time is measured around each call; where
calls only queue work (CUDA), ``sync`` waits for the device around a call, but only while
several groups share it: a lone group needs no measure and keeps host and device overlapped.

Row buckets: an engine that pads compiled calls to row buckets (engines/speed.py) makes 18 rows
cost as much as 24. With ``buckets`` set, a group whose rows overshoot a bucket steps the
largest subset that fits the bucket below when that advances more rows per unit of call cost,
modelled as the padded rows plus ``bucket_overhead_rows`` for what any call costs regardless
of its size; the members left out are the first ones next call (least recently stepped first),
so all advance in rotation. Without buckets (the CPU, eager calls) every member steps every turn.

The engine's UNet is batch-invariant where exact batching is on (engines/invariance.py), so a
picture is bit-identical whether its request ran alone or batched (tests/engine/test_batching_exact.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from bildwerk.app.generate import Task
from bildwerk.core.errors import GenerationCancelled
from bildwerk.engines.base import BatchEngine, CancelToken, GenerationResult, Prepared
from bildwerk.engines.speed import bucket_rows

# Defaults measured on 2 CPU cores with the default model (docs/benchmarks.md): per-row UNet
# cost stops falling near 32 rows; 32 rows of 64x64 latents is SD 1.5's 512 px at batch 16.
DEFAULT_MAX_ROWS = 32
DEFAULT_MAX_CELLS = 32 * 64 * 64
# A worker holds (stepping and waiting) up to this many calls' worth of rows and cells: a full
# group of one shape plus room for another shape, or prepared tasks ready to join as rows free.
HOLD_FACTOR = 2
# What any call costs whatever its size, in rows' worth (kernel launches, small layers that do
# not fill the device): the break-even of a trimmed call against a padded one. A guess until
# measured on a GPU; only used with row buckets.
BUCKET_OVERHEAD_ROWS = 4


@dataclass
class Slot:
    key: str  # the caller's name for the task (a job id)
    task: Task
    cancel: CancelToken | None = None
    seq: int = 0  # arrival order
    group: Hashable | None = None  # the batch_key it steps under; None while it waits
    turn: int = -1  # its place in its group's rotation: a ticket drawn each time it steps

    @property
    def prepared(self) -> Prepared:
        p = self.task.prepared
        assert p is not None
        return p


@dataclass
class Outcome:
    """A task that left the batch: its result, or why it has none."""

    key: str
    task: Task
    result: GenerationResult | None = None
    error: BaseException | None = None


@dataclass
class ContinuousBatcher:
    max_rows: int = DEFAULT_MAX_ROWS  # per call (group)
    max_cells: int = DEFAULT_MAX_CELLS  # per call (group)
    max_in_flight: int | None = None  # jobs held; None: ``hold`` calls' worth of rows and cells
    hold: int = HOLD_FACTOR
    buckets: tuple[int, ...] = ()  # row buckets the engine pads calls to; () = none
    bucket_overhead_rows: int = BUCKET_OVERHEAD_ROWS
    clock: Callable[[], float] = time.perf_counter
    sync: Callable[[], None] | None = None  # waits for the device to finish queued work
    slots: list[Slot] = field(default_factory=list)  # oldest first: added in order, removed in place
    last_rows: int = 0  # rows in the last network call (for metrics)
    _seq: int = 0
    _tickets: int = 0
    _calls: int = 0
    _share: dict[Hashable, float] = field(default_factory=dict)  # group -> seconds of device time
    _last_call: dict[Hashable, int] = field(default_factory=dict)  # group -> number of its last call

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_cells < 1:
            raise ValueError("max_rows and max_cells must be at least 1")
        if self.hold < 1 or (self.max_in_flight is not None and self.max_in_flight < 1):
            raise ValueError("hold and max_in_flight must be at least 1")
        self.buckets = tuple(sorted(set(self.buckets)))

    def __len__(self) -> int:
        return len(self.slots)

    def keys(self) -> list[str]:
        return [s.key for s in self.slots]

    def waiting(self) -> list[str]:
        """Tasks held but not stepping (their group was full at the last step), oldest first."""
        return [s.key for s in self.slots if s.group is None]

    def waiting_to_start(self) -> list[str]:
        """Tasks that have made no step and find no room in their shape's group (after those
        that fit joined), oldest first. A task that can step at once is not waiting: a stop
        lets it run in the drain, as clients see it running."""
        self._fill()
        return [s.key for s in self.slots if s.group is None and s.turn == -1]

    @property
    def model_ref(self) -> str | None:
        """The model every active task uses (the worker admits only tasks for it)."""
        return self.slots[0].task.spec.request.model if self.slots else None

    def rows(self) -> int:
        return sum(s.prepared.rows for s in self.slots)

    def cells(self) -> int:
        return sum(s.prepared.cells for s in self.slots)

    def has_room(self) -> bool:
        """Whether to take another task (the worker claims while this holds)."""
        if self.max_in_flight is not None:
            return len(self.slots) < self.max_in_flight
        if self.max_rows == 1:
            return not self.slots  # batching off: one job at a time
        return self.rows() < self.hold * self.max_rows and self.cells() < self.hold * self.max_cells

    def add(self, key: str, task: Task, cancel: CancelToken | None = None) -> None:
        if not task.batched:
            raise ValueError("only tasks with denoising steps left join a batch")
        self._seq += 1
        self.slots.append(Slot(key, task, cancel, seq=self._seq))

    def remove(self, key: str) -> Slot | None:
        for i, s in enumerate(self.slots):
            if s.key == key:
                return self.slots.pop(i)
        return None

    # -- choosing the call ----------------------------------------------------------------------
    def _fits(self, load: list[int], p: Prepared) -> bool:
        rows, cells = load
        return rows == 0 or (rows + p.rows <= self.max_rows and cells + p.cells <= self.max_cells)

    def _fill(self) -> None:
        """Waiting tasks join their group, oldest first per shape, while it has rows and cells."""
        load: dict[Hashable, list[int]] = {}
        for s in self.slots:
            if s.group is not None and s.group != s.prepared.batch_key:
                s.group = None  # a hires job changed shape: it queues again, at its age
            if s.group is not None:
                lr = load.setdefault(s.group, [0, 0])
                lr[0], lr[1] = lr[0] + s.prepared.rows, lr[1] + s.prepared.cells
        blocked: set[Hashable] = set()  # a shape's oldest waiting task did not fit: none after it jumps in
        for s in self.slots:
            if s.group is not None:
                continue
            p = s.prepared
            k = p.batch_key
            lr = load.setdefault(k, [0, 0])
            if k in blocked or not self._fits(lr, p):
                blocked.add(k)
                continue
            s.group = k
            lr[0], lr[1] = lr[0] + p.rows, lr[1] + p.cells

    def _pick(self) -> tuple[Hashable, list[Slot]]:
        """The group with the least share of device time, and the members its call takes."""
        groups: dict[Hashable, list[Slot]] = {}
        for s in self.slots:
            if s.group is not None:
                groups.setdefault(s.group, []).append(s)
        floor = min((self._share[k] for k in groups if k in self._share), default=0.0)
        self._share = {k: self._share.get(k, floor) for k in groups}
        self._last_call = {k: self._last_call.get(k, -1) for k in groups}
        key = min(groups, key=lambda k: (self._share[k], self._last_call[k], groups[k][0].seq))
        return key, self._trim(groups[key])

    def _trim(self, members: list[Slot]) -> list[Slot]:
        """All members, or the subset that fills the row bucket below when that pays."""
        rows = sum(s.prepared.rows for s in members)
        padded = bucket_rows(rows, self.buckets) if self.buckets else rows
        below = [b for b in self.buckets if b < rows]
        if padded == rows or not below:
            return members
        order = sorted(members, key=lambda s: (s.turn, s.seq))  # least recently stepped first
        if order[0].prepared.rows > below[-1]:
            return members  # the one due first would never fit a trimmed call
        chosen, taken = [], 0
        for s in order:
            if taken + s.prepared.rows <= below[-1]:
                chosen.append(s)
                taken += s.prepared.rows
        c = self.bucket_overhead_rows
        # Rows advanced per unit of cost, cost = padded rows + c: trim when the subset does better.
        if taken * (padded + c) > rows * (bucket_rows(taken, self.buckets) + c):
            return chosen  # in rotation order: tickets drawn in it keep the rotation going
        return members

    # -- stepping ----------------------------------------------------------------------------------
    def step(self) -> list[Outcome]:
        """Drop cancelled tasks, advance one group by one step, finish the tasks it completed."""
        out: list[Outcome] = []
        for s in list(self.slots):
            if s.cancel is not None and s.cancel.is_set():
                self.slots.remove(s)
                done, total = s.prepared.steps
                out.append(Outcome(s.key, s.task, error=GenerationCancelled(
                    f"cancelled after {done} of {total} steps")))
        if not self.slots:
            return out
        self._fill()
        key, group = self._pick()
        self.last_rows = sum(s.prepared.rows for s in group)
        engine = group[0].task.engine
        assert isinstance(engine, BatchEngine)
        shared = len(self._share) > 1 and self.sync is not None
        if shared:
            self.sync()  # type: ignore[misc] - work queued before is not this group's
        t = self.clock()
        try:
            engine.step([s.prepared for s in group])
            if shared:
                self.sync()  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the call failed for every member (e.g. OOM)
            for s in group:
                self.slots.remove(s)
                out.append(Outcome(s.key, s.task, error=exc))
            return out
        self._calls += 1
        self._share[key] += self.clock() - t
        self._last_call[key] = self._calls
        for s in group:
            self._tickets += 1
            s.turn = self._tickets
            if s.task.done:
                self.slots.remove(s)
                try:
                    out.append(Outcome(s.key, s.task, result=s.task.finish()))
                except Exception as exc:  # noqa: BLE001 - one bad decode fails one task
                    out.append(Outcome(s.key, s.task, error=exc))
        return out
