"""Running a plan into its folder: rounds of items through an executor, gates, top-ups.

One runner serves every executor (local, Ray, the job queue behind REST); an executor only
turns a list of items into :class:`~bildwerk.pool.render.Rendered` outcomes. The runner

1. skips items the folder's manifest has ended (accepted or rejected): a resumed run never
   makes a picture twice, and picks up failed ones again;
2. judges every picture with the gates (NSFW, near-duplicate) and files it as accepted or
   rejected with the reason;
3. tops up each kind whose accepted count is short of its target with the next seeds of the
   kind's prompts (plan.spares), round after round, until the targets are met or the spares
   run out;
4. stops cleanly when ``stop()`` turns true: items in flight finish, nothing new starts; then
   writes metadata.csv and the report.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bildwerk.core.errors import BildwerkError
from bildwerk.pool.folder import PoolFolder, needed
from bildwerk.pool.plan import PoolItem, PoolPlan
from bildwerk.pool.render import Rendered

# A run whose last this-many items all failed stops: a broken model or backend must not burn
# through every spare seed of the plan.
MAX_FAILURES_IN_A_ROW = 16


class Executor(Protocol):
    name: str

    def render(self, plan: PoolPlan, items: list[PoolItem], stop: Callable[[], bool]) -> Iterator[Rendered]:
        """Each item's outcome, in any order; no new item starts once ``stop()`` is true."""
        ...


@dataclass
class RunEvent:
    """What a progress display or an event stream gets after each picture."""

    type: str  # "start", "image", "end"
    target: int
    accepted: int
    counts: dict[str, dict[str, int]]  # kind -> {accepted, rejected, failed}
    made: int = 0  # pictures this run made (accepted + rejected)
    elapsed: float = 0.0
    item: PoolItem | None = None
    status: str | None = None
    reason: str | None = None
    outcome: str | None = None  # on "end": complete, stopped, short, failing

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "target": self.target, "accepted": self.accepted,
                             "counts": self.counts, "made": self.made, "elapsed": round(self.elapsed, 3)}
        if self.item is not None:
            d["item"] = {"id": self.item.id, "kind": self.item.kind, "location": self.item.location,
                         "seed": self.item.seed}
        for k in ("status", "reason", "outcome"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


@dataclass
class RunSummary:
    outcome: str
    made: int
    accepted: dict[str, int]
    target: dict[str, int]
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def images_per_hour(self) -> float:
        return self.made * 3600.0 / self.seconds if self.seconds > 0 else 0.0


class PoolRunner:
    def __init__(self, folder: PoolFolder, executor: Executor, *, gates: Any | None = None,
                 on_event: Callable[[RunEvent], None] | None = None, report: bool = True) -> None:
        """``gates``: a ``pool.gates.Gates`` (None: built from the plan's gate settings; pass
        ``False`` for none)."""
        self.folder = folder
        self.plan = folder.plan
        self.executor = executor
        if gates is None:
            from bildwerk.pool.gates import Gates

            gates = Gates(self.plan.gates)
        self.gates = gates or None
        self.on_event = on_event
        self.write_report = report
        self._made = 0
        self._t0 = 0.0
        self._fails_in_a_row = 0
        self.last_error: str | None = None

    # ------------------------------------------------------------------ events

    def _counts(self) -> dict[str, dict[str, int]]:
        return {k: {s: c[s] for s in ("accepted", "rejected", "failed")} for k, c in self.folder.counts().items()}

    def _emit(self, type_: str, **kw: Any) -> None:
        if self.on_event is None:
            return
        counts = self._counts()
        targets = {k.kind: k.images for k in self.plan.kinds}
        # Towards the target: a kind's pictures beyond its own target do not make up for another's.
        accepted = sum(min(c["accepted"], targets.get(k, 0)) for k, c in counts.items())
        self.on_event(RunEvent(type=type_, target=self.plan.images, accepted=accepted, counts=counts,
                               made=self._made, elapsed=time.monotonic() - self._t0, **kw))

    # ------------------------------------------------------------------ items

    def _round(self, ended: set[str], tried: set[str], first: bool) -> list[PoolItem]:
        if first:
            return [i for i in self.plan.items() if i.id not in ended]
        if not self.plan.gates.topup:
            return []
        todo: list[PoolItem] = []
        for kind, n in needed(self.plan, self.folder.accepted()).items():
            if n <= 0:
                continue
            fresh = (i for i in self.plan.spares(kind) if i.id not in ended and i.id not in tried)
            todo.extend(itertools.islice(fresh, n))
        return todo

    def _settle(self, r: Rendered) -> str:
        ex = self.executor.name
        item = r.item
        if r.png is None or r.image is None:
            self.folder.fail(item, r.error or "no picture", executor=ex)
            self.last_error = r.error
            self._fails_in_a_row += 1
            self._emit("image", item=item, status="failed", reason=r.error)
            return "failed"
        self._fails_in_a_row = 0
        verdict = self.gates.judge(item.kind, r.image, item.id) if self.gates is not None else None
        scores = dict(verdict.scores) if verdict is not None else {}
        emb = verdict.embedding if verdict is not None else None
        common = dict(model=r.model, model_prompt=r.prompt, scores=scores, embedding=emb,
                      seconds=r.seconds, executor=ex)
        self._made += 1
        if verdict is not None and verdict.reason is not None:
            self.folder.reject(item, r.png, verdict.reason, **common)
            self._emit("image", item=item, status="rejected", reason=verdict.reason)
            return "rejected"
        self.folder.accept(item, r.png, **common)
        self._emit("image", item=item, status="accepted")
        return "accepted"

    # ------------------------------------------------------------------ run

    def run(self, stop: Callable[[], bool] | None = None, *, limit: int | None = None) -> RunSummary:
        """Run until every kind has its target (or its spares ran out), ``stop()`` is true, or
        ``limit`` new pictures are made."""
        self._t0 = time.monotonic()
        self._made = 0
        if self.gates is not None and hasattr(self.gates, "load"):
            self.gates.load()  # a missing gate model fails here, before anything is generated
        run_id = self.folder.begin_run(self.executor.name)
        if self.gates is not None:
            for k in self.plan.kinds:
                rows = self.folder.rows(status="accepted", kind=k.kind)
                embs = self.folder.embeddings(k.kind)
                self.gates.restore(k.kind, embs, [r.id for r in rows if r.embedding is not None])

        def halted() -> bool:
            return ((stop is not None and stop()) or (limit is not None and self._made >= limit)
                    or self._fails_in_a_row >= MAX_FAILURES_IN_A_ROW)

        self._emit("start")
        outcome = "complete"
        tried: set[str] = set()
        first = True
        try:
            while True:
                todo = self._round(self.folder.ended_ids(), tried, first)
                first = False
                if limit is not None:
                    todo = todo[:max(0, limit - self._made)]  # never start more than the limit
                if not todo:
                    break
                tried.update(i.id for i in todo)
                for r in self.executor.render(self.plan, todo, halted):
                    self._settle(r)
                if halted():
                    break
        finally:
            short = needed(self.plan, self.folder.accepted())
            if self._fails_in_a_row >= MAX_FAILURES_IN_A_ROW:
                outcome = "failing"
            elif (stop is not None and stop()) or (limit is not None and self._made >= limit):
                outcome = "stopped"
            elif any(short.values()):
                outcome = "short"
            self.folder.write_metadata()
            report: dict[str, Any] = {}
            if self.write_report:
                from bildwerk.pool.report import write_report

                report = write_report(self.folder)
            self.folder.end_run(run_id, self._made, outcome)
            self._emit("end", outcome=outcome)
        accepted = dict(self.folder.accepted())
        summary = RunSummary(outcome=outcome, made=self._made, accepted=accepted,
                             target={k.kind: k.images for k in self.plan.kinds},
                             seconds=time.monotonic() - self._t0, report=report, last_error=self.last_error)
        if outcome == "failing":
            raise PoolFailing(summary)
        return summary


class PoolFailing(BildwerkError):
    """The run stopped because every recent item failed (a broken model or backend)."""

    code = "pool_failing"

    def __init__(self, summary: RunSummary) -> None:
        super().__init__(f"stopped after {MAX_FAILURES_IN_A_ROW} failures in a row; the last: {summary.last_error}")
        self.summary = summary
