"""The job-queue executor: a pool's items as ordinary jobs of the server's queue.

Each item becomes the job its spec describes (:func:`~bildwerk.pool.render.item_spec`,
origin "pool"), tagged with the pool's id and the item's deterministic id, so the pool's
pictures are in the history like every other job and run in the worker's shared UNet calls
beside other users' jobs. At most ``window`` of the pool's jobs are queued or running at a
time: a pool of 10,000 pictures never fills the bounded queue, and another user's job waits
behind at most ``window`` of them. A full queue (QueueFull: other users) is waited out.

Before anything is submitted, the store is asked which of the items already have jobs: a
succeeded one is settled from its stored result, a queued or running one is waited for, and
only items without one (or whose jobs failed or were cancelled) are submitted. So a resumed
pool, or a server restarted mid-pool, loses nothing and makes nothing twice.

``stop()`` true: nothing new is submitted; the jobs already queued run to their end and are
settled (a pause), unless the pool's service cancels them (a cancel). When the job service
itself stops (a shutdown), the executor returns at once: the jobs stay in the queue and the
next run finds them.
"""

from __future__ import annotations

import io
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image

from bildwerk.core.errors import BildwerkError
from bildwerk.jobs.service import JobService
from bildwerk.jobs.store import QueueFull, StoreError, StoreUnwritableError
from bildwerk.pool.plan import PoolItem, PoolPlan
from bildwerk.pool.render import Rendered, check_plan, error_text, item_spec

log = logging.getLogger("bildwerk.pool")

DEFAULT_WINDOW = 16
# How often the store is read while waiting (jobs that end in another process sharing the
# store send no news here); news from this process's worker wakes the executor at once.
POLL_SECONDS = 1.0
# The longest wait before trying a full queue again.
MAX_BACKOFF_SECONDS = 5.0


def with_model(plan: PoolPlan, model: str | None) -> PoolPlan:
    """The plan with ``model`` where its settings name none (the server's default model)."""
    if plan.settings.model is not None or not model:
        return plan
    return plan.model_copy(update={"settings": plan.settings.model_copy(update={"model": model})})


class QueueExecutor:
    name = "queue"

    def __init__(self, jobs: JobService, pool_id: str, window: int = DEFAULT_WINDOW, *,
                 default_model: str | None = None, poll: float = POLL_SECONDS) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.jobs = jobs
        self.store = jobs.store
        self.pool_id = pool_id
        self.window = window
        self.default_model = default_model
        self.poll = poll
        self.submitted = 0  # jobs this executor queued (not the ones it found)

    def check(self, plan: PoolPlan) -> None:
        """What would make every submission fail (the model, the style, the settings), as
        the error a client should get before the pool starts."""
        check_plan(self.jobs.generator, with_model(plan, self.default_model))

    # ------------------------------------------------------------------ results

    def _rendered(self, item: PoolItem, job_id: str) -> Rendered | None:
        """The outcome of an ended job (None: deleted meanwhile; the item is not done)."""
        row = self.store.get(job_id)
        if row is None:
            return None
        seconds = max(0.0, (row.finished_at or 0.0) - (row.started_at or row.finished_at or 0.0))
        if row.status != "succeeded":
            code = row.error_type or row.status
            return Rendered(item, error=f"{code}: {row.error_message or 'the job ' + row.status}"[:500],
                            seconds=seconds)
        if not row.results:
            return Rendered(item, error="internal: the job succeeded without a picture", seconds=seconds)
        try:
            png = self.store.read_image(row.results[0].sha256)
            image = Image.open(io.BytesIO(png))
            image.load()
        except (StoreError, OSError) as exc:
            return Rendered(item, error=error_text(exc), seconds=seconds)
        record = row.record or {}
        model = record.get("model") if isinstance(record.get("model"), dict) else {}
        final = record.get("request") if isinstance(record.get("request"), dict) else {}
        return Rendered(item, png=png, image=image,
                        model=str(model.get("name") or model.get("ref") or row.model or ""),
                        prompt=str(final.get("prompt") or row.prompt or item.prompt), seconds=seconds)

    # ------------------------------------------------------------------ the run

    def render(self, plan: PoolPlan, items: list[PoolItem], stop: Callable[[], bool]) -> Iterator[Rendered]:
        plan = with_model(plan, self.default_model)
        by_id = {i.id: i for i in items}
        inflight: dict[str, PoolItem] = {}  # job id -> item
        pending: deque[PoolItem] = deque()
        known = self.store.pool_item_jobs(self.pool_id, list(by_id))
        for item in by_id.values():
            jobs = known.get(item.id, [])
            done = next((j for j, status in reversed(jobs) if status == "succeeded"), None)
            active = next((j for j, status in reversed(jobs) if status in ("queued", "running")), None)
            if done is not None:
                r = self._rendered(item, done)
                if r is not None and r.png is not None:
                    yield r  # made before (a restart, a pause): settled, not made again
                    continue
            if active is not None:
                inflight[active] = item  # queued before: waited for, not queued again
            else:
                pending.append(item)

        def halted() -> bool:
            return stop() or self.jobs.stopping

        backoff_until: float = 0.0
        refused_at: int | None = None

        def may_submit() -> bool:
            # After a full queue: once a job ended here (a slot is free), or the wait is over
            # (jobs of other processes sharing the store end without news here). After a full
            # disk: once the wait is over.
            return time.monotonic() >= backoff_until or (refused_at is not None and self.jobs.ends != refused_at)

        while pending or inflight:
            seen = self.jobs.ends
            while pending and len(inflight) < self.window and not halted() and may_submit():
                item = pending[0]
                try:
                    row = self.jobs.submit(item_spec(plan, item), api="pool", pool_id=self.pool_id,
                                           pool_item=item.id)
                except QueueFull as exc:  # other users' jobs fill the queue: wait for a slot
                    wait = min(MAX_BACKOFF_SECONDS, float(getattr(exc, "retry_after", 1) or 1))
                    backoff_until, refused_at = time.monotonic() + wait, seen
                    break
                except StoreUnwritableError:  # a full disk: the job service probes; so do we
                    backoff_until, refused_at = time.monotonic() + MAX_BACKOFF_SECONDS, None
                    break
                except BildwerkError as exc:  # this item cannot be made (its prompt, say)
                    pending.popleft()
                    yield Rendered(item, error=error_text(exc))
                    continue
                pending.popleft()
                inflight[row.id] = item
                self.submitted += 1
            if self.jobs.stopping:
                return  # a shutdown: the queued jobs stay and the next run finds them
            if stop():
                pending.clear()  # nothing new; what is queued runs to its end (or is cancelled)
            if not inflight and not pending:
                break
            if inflight:
                statuses = self.store.job_statuses(list(inflight))
                ended = [j for j in inflight if statuses.get(j, "gone") not in ("queued", "running")]
                for job_id in ended:
                    item = inflight.pop(job_id)
                    status = statuses.get(job_id)
                    if status == "cancelled" and stop():
                        continue  # cancelled with its pool: nothing to record, not a failure
                    r = self._rendered(item, job_id) if status is not None else None
                    if r is None:  # deleted meanwhile: made again later
                        if not stop():
                            pending.append(item)
                        continue
                    yield r
                if ended:
                    continue  # room in the window: submit before waiting
            timeout = self.poll
            if pending and not inflight:
                timeout = max(0.0, min(self.poll, backoff_until - time.monotonic()))
            self.jobs.wait_for_ends(seen, timeout)

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "pool": self.pool_id, "window": self.window}
