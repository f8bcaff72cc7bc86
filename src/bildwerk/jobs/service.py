"""The job service: accept generations into the persistent queue, run them batched.

Every face that generates through the server (REST native, A1111, OpenAI, museum; later the
web UI and pools) submits a ``JobSpec`` here. A job is written to SQLite (request, prompt
options, input images) *before* the caller hears "accepted", so a restart or a kill loses
nothing. The worker thread claims jobs under a lease (several worker processes may share one
store: a job runs in one of them at a time, and a dead worker's job is re-run once), starts
them through the one use case (app/generate.py) and steps every started job of the same
model and shape together (app/batching.py): a job joins the batch at the next step and leaves
it when done, with its own progress and its own cancel. Once a model is loaded, the batch is
fitted to it (engines/budget.py): on CUDA the cells a call may hold come from the measured
activation memory and the free memory, unless the operator set them.

Faults it rides out: a full (or read-only) store answers submissions with StoreFullError,
fails the running job whose results could not be saved, pauses claiming and probes until
space returns; a stop (SIGTERM) stops claiming at once, answers waiters of jobs it will not
run, hands back the jobs held but not started (waiting for their batch), and drains the running
batch for ``drain_timeout`` before handing it back to the queue.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from bildwerk.app.batching import DEFAULT_MAX_CELLS, DEFAULT_MAX_ROWS, ContinuousBatcher, Outcome
from bildwerk.app.generate import Generator
from bildwerk.core.errors import BildwerkError, GenerationCancelled
from bildwerk.core.spec import JobSpec
from bildwerk.engines.base import GenerationResult, ProgressEvent
from bildwerk.engines.budget import MemoryBudget, fit_batching
from bildwerk.engines.registry import EngineRouter
from bildwerk.jobs.metrics import JobMetrics
from bildwerk.jobs.store import (
    ANY_MODEL,
    DEFAULT_LEASE_SECONDS,
    FINISHED_STATUSES,
    QueueFull,
    Store,
    StoreError,
    StoreUnwritableError,
    new_worker_id,
)
from bildwerk.jobs.watchers import Watchers

log = logging.getLogger("bildwerk.jobs")

FINAL = frozenset(FINISHED_STATUSES)

# A stop lets the running batch finish for this long, then hands it back to the queue; under
# the 30 s Kubernetes (and, with a smaller setting, the 10 s Docker) grace before SIGKILL.
DEFAULT_DRAIN_SECONDS = 20.0
# After the drain, how long a worker stuck in a call that cannot be interrupted (a model
# load, a remote request) gets before the stop hands its jobs back without it.
HAND_BACK_SECONDS = 3.0
# While the store takes no writes, how often the worker looks whether it does again.
STORE_PROBE_SECONDS = 2.0
# How often an idle worker collects what killed writers left in the store (also at start).
COLLECT_SECONDS = 3600.0
# Progress previews (only for jobs a client watches with previews): at most one a second,
# and never more often than every PREVIEW_COST_FACTOR times what the last one took, so a
# slow decode (a big VAE on a CPU) costs the batch at most a fifth of its time.
PREVIEW_EVERY_S = 1.0
PREVIEW_COST_FACTOR = 4.0


class ServiceStopping(BildwerkError):
    """The service is stopping and will not run this job to its end; it stays in the queue
    (or goes back to it) and runs after the next start, or on another server of the store."""

    code = "shutting_down"
    retry_after = 5

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"the server is stopping; job {job_id} did not run to its end here and "
                         "stays in the queue: it runs after the next start (or on another server "
                         "sharing the store)")
        self.job_id, self.status = job_id, status


@dataclass
class Progress:
    phase: str = "queued"
    step: int = 0
    total: int = 0
    elapsed: float = 0.0
    updated: float = field(default_factory=time.time)
    preview: str | None = None  # the latest preview, a JPEG data: URL
    previews: int = 0  # how many were made (a stream sends each new one once)
    preview_at: float = 0.0  # monotonic
    preview_cost: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        frac = self.step / self.total if self.total else (1.0 if self.phase == "done" else 0.0)
        return {"phase": self.phase, "step": self.step, "total": self.total,
                "fraction": round(frac, 4), "elapsed": round(self.elapsed, 3)}


class _HandedBack(GenerationCancelled):
    """A stop hands a job held but not started back to the queue (it did no work here)."""


class _Cancel:
    """A job's cancel token: asked for by a client (here, or in another process sharing the
    store: the worker reads the store's flags with every lease renewal), or a hard stop."""

    def __init__(self, service: JobService, job_id: str) -> None:
        self._service, self._id = service, job_id

    def is_set(self) -> bool:
        return self._service.is_cancelling(self._id) or self._service._drain_over()


class JobService:
    def __init__(self, store: Store, router: EngineRouter | None = None, *, max_queued: int = 64,
                 metrics: JobMetrics | None = None, pipeline: Any | None = None,
                 warmup_model: str | None = "", poll_interval: float = 0.5,
                 max_batch_rows: int = DEFAULT_MAX_ROWS, max_batch_cells: int | None = None,
                 max_in_flight: int | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 model_policy: Any | None = None) -> None:
        self.store = store
        # model_policy: which models clients may name (a ModelPolicy; the operator's by default)
        self.generator = Generator(router or EngineRouter(), pipeline=pipeline, policy=model_policy)
        self.max_queued = max_queued
        self.metrics = metrics or JobMetrics()
        self.warmup_model = warmup_model  # "" = the default model; None = no warm-up
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.worker_id = new_worker_id()
        self.ready = False
        self.ready_error: str | None = None
        # max_batch_cells None: measured for each model on CUDA (engines/budget.py), else the default.
        self._cells_set = max_batch_cells is not None
        self._batcher = ContinuousBatcher(max_rows=max_batch_rows, max_cells=max_batch_cells or DEFAULT_MAX_CELLS,
                                          max_in_flight=max_in_flight)
        self._budget: MemoryBudget | None = None
        self._progress: dict[str, Progress] = {}
        self._rows: dict[str, Any] = {}  # running here: job id -> its row (for metrics)
        self._started: dict[str, float] = {}
        self._ended: dict[str, float] = {}  # job id -> when it ended here (wakes waiters early)
        self._cancelled: set[str] = set()
        self._watchers = Watchers()
        self._preview_watchers: dict[str, int] = {}  # job id -> streams that want previews
        self._preview_lock = threading.Lock()
        # For threads that wait for jobs (a pool's executor): a count of the jobs that ended
        # here (and of stops and store news), with a condition to wait on.
        self._ends = 0
        self._ends_changed = threading.Condition()
        self._wake = threading.Event()
        self._last_claim = 0.0
        self._stop = threading.Event()
        self._drain_deadline: float | None = None  # monotonic; set when a stop is asked for
        self._thread: threading.Thread | None = None
        self._last_run_seconds = 10.0
        self._last_renewal = 0.0
        self._last_collect = 0.0
        # Set while the store takes no writes (disk full, read-only); cleared by a probe.
        self._store_trouble: StoreUnwritableError | None = None
        self._last_probe = 0.0
        # Ends of jobs the store could not take yet: job id -> (write, then), retried by the probe.
        self._unrecorded: dict[str, tuple[Callable[[], Any], Callable[[], None] | None]] = {}

    @property
    def router(self) -> EngineRouter:
        return self.generator.router

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        try:
            recovered = self.store.recover()
            if recovered:
                log.warning("%d job(s) of ended workers were running; queued again", recovered)
        except StoreUnwritableError as exc:  # the worker's claims take them back later
            self._store_failed(exc)
        self._stop.clear()
        self._drain_deadline = None
        self._thread = threading.Thread(target=self._loop, name="bildwerk-worker", daemon=True)
        self._thread.start()

    def begin_stop(self, drain_timeout: float = DEFAULT_DRAIN_SECONDS) -> None:
        """Stop claiming at once and start the drain; returns at once (safe from a signal
        handler). Waiters of jobs that will not run here are answered now (ServiceStopping);
        the running batch goes on for ``drain_timeout`` seconds, then back to the queue."""
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + max(0.0, drain_timeout)
        self._stop.set()
        self._wake.set()
        self._notify_all()

    def stop(self, *, drain_timeout: float = DEFAULT_DRAIN_SECONDS) -> None:
        """Stop taking jobs at once; let the running ones finish (up to ``drain_timeout``
        from the first stop asked for), then stop them. A job stopped this way is put back in
        the queue, not marked cancelled: the user did not ask for that, and the next start
        (or another worker) runs it; its interrupted run is no attempt.
        """
        self.begin_stop(drain_timeout)
        if self._thread is None:
            return
        assert self._drain_deadline is not None
        left = self._drain_deadline - time.monotonic()
        self._thread.join(max(0.0, left) + HAND_BACK_SECONDS)
        if self._thread.is_alive():
            self._give_back_stuck()
        self._thread = None

    @property
    def stopping(self) -> bool:
        """A stop was asked for: no more claims; the running batch drains."""
        return self._stop.is_set()

    @property
    def store_problem(self) -> str | None:
        """Why the store takes no writes now (disk full, read-only), or None."""
        trouble = self._store_trouble
        return None if trouble is None else str(trouble)

    def _paused(self) -> bool:
        """No claims now: a stop was asked for, or the store takes no writes."""
        return self._stop.is_set() or self._store_trouble is not None

    def _drain_over(self) -> bool:
        deadline = self._drain_deadline
        return deadline is not None and time.monotonic() >= deadline

    def _give_back_stuck(self) -> None:
        """The worker is stuck past the drain: hand its jobs back from here. Should it wake
        later, the store refuses its writes (the jobs no longer run under its worker id)."""
        log.warning("the worker did not stop within the drain; handing %d job(s) back", len(self._rows))
        for job_id in list(self._rows):
            try:
                self.store.requeue(job_id, worker_id=self.worker_id)
            except StoreError as exc:
                log.warning("could not hand job %s back: %s", job_id, exc)

    @property
    def alive(self) -> bool:
        """The worker thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # -- the interface the routers use --------------------------------------------------------
    def running(self) -> list[str]:
        """Ids of the jobs this process is generating now, oldest first."""
        return list(self._rows)

    def progress_of(self, job_id: str) -> dict[str, Any] | None:
        p = self._progress.get(job_id)
        return p.as_dict() if p is not None else None

    def preview_of(self, job_id: str) -> tuple[int, str | None]:
        """How many previews a job had here, and the latest (a JPEG data: URL)."""
        p = self._progress.get(job_id)
        return (p.previews, p.preview) if p is not None else (0, None)

    @contextmanager
    def watching_previews(self, job_id: str) -> Iterator[None]:
        """While a client watches a job with previews, its denoising steps make them."""
        with self._preview_lock:
            self._preview_watchers[job_id] = self._preview_watchers.get(job_id, 0) + 1
        try:
            yield
        finally:
            with self._preview_lock:
                left = self._preview_watchers.get(job_id, 1) - 1
                if left > 0:
                    self._preview_watchers[job_id] = left
                else:
                    self._preview_watchers.pop(job_id, None)

    def _make_preview(self, job_id: str, prog: Progress, ev: ProgressEvent) -> None:
        if ev.preview is None or not self._preview_watchers.get(job_id):
            return
        if time.monotonic() - prog.preview_at < max(PREVIEW_EVERY_S, PREVIEW_COST_FACTOR * prog.preview_cost):
            return
        from bildwerk.images.io import jpeg_data_url

        t = time.perf_counter()
        try:
            image = ev.preview()
            if image is not None:
                prog.preview, prog.previews = jpeg_data_url(image), prog.previews + 1
        except Exception:  # noqa: BLE001 - a preview is a nicety; the job goes on
            log.debug("preview of job %s failed", job_id, exc_info=True)
        prog.preview_cost = time.perf_counter() - t
        prog.preview_at = time.monotonic()

    def is_cancelling(self, job_id: str) -> bool:
        return job_id in self._cancelled

    def loaded_model(self) -> dict[str, Any] | None:
        return self.router.describe()["loaded"]

    def batch_limits(self) -> dict[str, Any]:
        """What one UNet call may hold now and where the cells bound came from (for /ready)."""
        b = self._batcher
        source = "operator" if self._cells_set else "measured" if self._budget is not None else "default"
        return {"max_rows": b.max_rows, "max_cells": b.max_cells, "cells_from": source,
                "row_buckets": list(b.buckets), "max_in_flight": b.max_in_flight,
                "memory": self._budget.describe() if self._budget is not None else None}

    def check_model(self, ref: str | None) -> Any:
        """A model reference this service's policy permits and that names a model (the
        error a client should get now); returns it resolved."""
        return self.generator.check_model(ref)

    # -- accepting --------------------------------------------------------------------------
    def submit(self, spec: JobSpec | dict[str, Any], *, api: str, options: Any | None = None,
               image: Image.Image | None = None, mask: Image.Image | None = None,
               pool_id: str | None = None, pool_item: str | None = None) -> Any:
        """Check and persist a job; returns its row. Raises InvalidRequestError (and the
        other client errors of ``Generator.check``), QueueFull. A dict of request fields is
        built into a spec here (with ``options``, ``image``, ``mask``). ``pool_id`` and
        ``pool_item``: the image pool and plan item the job makes (pool/queue.py)."""
        from bildwerk.images.io import encode_png

        try:
            if not isinstance(spec, JobSpec):
                spec = JobSpec.build(origin=api, options=options, image=image, mask=mask, **spec)  # type: ignore[arg-type]
            source = self.generator.check(spec)  # fail now, not in the worker
            spec = self.generator.advise(spec, source)  # its warnings in the record at once
        except BildwerkError:
            self.metrics.rejected.labels("invalid").inc()
            raise
        inputs = {role: encode_png(im) for role, im in spec.inputs().items()}
        stored = spec.stored()
        try:
            row = self.store.create_job(request=stored["request"], api=api, engine=spec.engine_kind,
                                        options=stored["options"], inputs=inputs, max_queued=self.max_queued,
                                        pool_id=pool_id, pool_item=pool_item)
        except QueueFull as exc:
            self.metrics.rejected.labels("queue_full").inc()
            exc.retry_after = self.retry_after()  # type: ignore[attr-defined]  # -> Retry-After
            raise
        except StoreUnwritableError as exc:  # nothing was written; 507/503 with Retry-After
            self.metrics.rejected.labels(exc.code).inc()
            self._store_failed(exc)
            raise
        self.metrics.accepted.labels(api).inc()
        self._progress[row.id] = Progress()
        self._wake.set()
        return row

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about one job's time, when a slot frees."""
        return max(1, math.ceil(self._last_run_seconds))

    def cancel(self, job_id: str) -> str | None:
        outcome = self.store.cancel(job_id)
        if outcome == "cancelling":
            self._cancelled.add(job_id)
        elif outcome == "cancelled":
            self.metrics.finished.labels("cancelled").inc()
            self._ended[job_id] = time.time()
            self._notify(job_id)
            self._count_end()
        return outcome

    def status(self, job_id: str) -> dict[str, Any] | None:
        row = self.store.get(job_id)
        if row is None:
            return None
        if row.status in FINAL:
            prog_d = {"phase": row.status, "step": 1, "total": 1, "fraction": 1.0, "elapsed": 0.0}
        else:
            prog_d = self.progress_of(job_id) or Progress().as_dict()
        position = self.store.queue_position(job_id) if row.status == "queued" else 0
        return {"row": row, "progress": prog_d, "position": position or 0}

    def _stamp(self, job_id: str) -> float:
        p = self._progress.get(job_id)
        return max(p.updated if p is not None else 0.0, self._ended.get(job_id, 0.0))

    def _notify(self, job_id: str) -> None:
        """From the worker thread: wake the event-loop waiters of a job (no polling)."""
        self._watchers.wake(job_id)

    def _notify_all(self) -> None:
        """Wake every waiter: news for all of them (a stop, the store's state)."""
        self._watchers.wake_all()
        self._count_end()

    def _count_end(self) -> None:
        with self._ends_changed:
            self._ends += 1
            self._ends_changed.notify_all()

    @property
    def ends(self) -> int:
        """A counter that grows whenever a job ends here (or a stop or the store's state is
        news for every waiter); pass it to :meth:`wait_for_ends`."""
        return self._ends

    def wait_for_ends(self, seen: int, timeout: float) -> int:
        """From a thread, never the event loop: block until :attr:`ends` passes ``seen``, at
        most ``timeout`` seconds; returns it. Jobs that end in another process sharing the
        store bring no news here: callers also read the store now and then."""
        with self._ends_changed:
            self._ends_changed.wait_for(lambda: self._ends != seen, timeout)
            return self._ends

    def leaving(self, job_id: str) -> bool:
        """The service is stopping and will do nothing more for this job: it is not (or no
        longer) running here. Streams and waiters of such a job should tell their client."""
        return self._stop.is_set() and job_id not in self._rows

    async def next_change(self, job_id: str, seen: float, timeout: float) -> float:
        """Wait (without blocking the event loop) until this process records news of a job
        (progress, or its end) after the stamp ``seen``, at most ``timeout`` seconds; returns
        the newest stamp. Jobs run by another process sharing the store bring no news here:
        callers also poll the store, less often."""
        return await self._watchers.after(job_id, lambda: self._stamp(job_id), seen, timeout)

    async def wait(self, job_id: str, timeout: float = 600.0) -> Any:
        """Wait until a job ends; returns its row (None when it was deleted). A job that ends
        in this process wakes the waiter within 10 ms; the store is read on news or every 0.25 s.

        Answers early, raising, when the job will not end soon: ServiceStopping once a stop
        was asked for and the job does not run here (any more); the store's StoreFullError
        (StoreUnwritableError) while the store takes no writes. The job stays in the store.
        """
        deadline = time.monotonic() + timeout
        seen = 0.0
        while True:
            row = await asyncio.to_thread(self.store.get, job_id)
            if row is None or row.status in FINAL or time.monotonic() > deadline:
                return row
            trouble = self._store_trouble
            if trouble is not None:
                err = type(trouble)(f"{trouble}; job {job_id} ({row.status}) waits until the "
                                    "store takes writes again")
                err.status = row.status  # type: ignore[attr-defined]  # (ServiceStopping's too)
                raise err
            if self.leaving(job_id):
                # A job leaves the running set only once its end is written: read it again.
                row = await asyncio.to_thread(self.store.get, job_id)
                if row is None or row.status in FINAL:
                    return row
                raise ServiceStopping(job_id, row.status)
            seen = await self.next_change(job_id, seen, min(0.25, max(0.0, deadline - time.monotonic())))

    # -- the worker -------------------------------------------------------------------------
    def _loop(self) -> None:
        self._collect()
        self._warm_up()
        while True:
            try:
                if self._drain_over():
                    self._hand_back_all()
                    return
                self._probe_store()
                admitted = 0 if self._paused() else self._admit()
                if self._stop.is_set():
                    self._hand_back_waiting()
                if not len(self._batcher):
                    if self._stop.is_set():
                        return
                    if not admitted:
                        self._idle()
                    continue
                outcomes = self._batcher.step()
                if self._batcher.last_rows:
                    self.metrics.batch_rows.observe(self._batcher.last_rows)
                    self._batcher.last_rows = 0
                for outcome in outcomes:
                    self._settle(outcome)
                self._renew()
            except StoreUnwritableError as exc:  # a claim or a renewal met a full disk
                self._store_failed(exc)
            except Exception:  # noqa: BLE001 - the worker must outlive any one failure
                log.exception("worker error; going on")
                time.sleep(self.poll_interval)

    def _idle(self) -> None:
        # Polling also finds jobs queued by other processes; each claim first takes back the
        # jobs of dead workers (Store.claim_next with a worker id reclaims expired leases).
        if time.monotonic() - self._last_collect >= COLLECT_SECONDS:
            self._collect()
        self._wake.wait(self.poll_interval)

    def _collect(self) -> None:
        """What killed writers left in the store (temp files, images no job uses): at start
        and every COLLECT_SECONDS; safe beside other servers of the store (Store.collect)."""
        self._last_collect = time.monotonic()
        try:
            counts = self.store.collect()
        except Exception as exc:  # noqa: BLE001 - housekeeping must not stop the worker
            log.warning("could not collect the store's leftovers: %s", exc)
            return
        if any(counts.values()):
            log.info("collected the store's leftovers: %d temp file(s), %d orphan image(s)",
                     counts["temp"], counts["orphans"])

    # -- a store that takes no writes -------------------------------------------------------
    def _store_failed(self, exc: StoreUnwritableError) -> None:
        """A write met a full (or read-only) store: pause claiming and answer waiters now."""
        if self._store_trouble is None:
            log.error("the store takes no writes: %s (cause: %s); pausing the queue until it does",
                      exc, exc.__cause__ or exc)
            self._last_probe = time.monotonic()
        self._store_trouble = exc
        self._notify_all()

    def _probe_store(self) -> None:
        """While the store is in trouble, every STORE_PROBE_SECONDS: write what could not be
        written (ends of jobs), then room for a job's results; on success the queue goes on."""
        if self._store_trouble is None or time.monotonic() - self._last_probe < STORE_PROBE_SECONDS:
            return
        self._last_probe = time.monotonic()
        try:
            self._write_unrecorded()
            self.store.probe_space()
        except StoreUnwritableError as exc:
            self._store_trouble = exc
            return
        log.warning("the store takes writes again; the queue goes on")
        self._store_trouble = None
        self._notify_all()

    def _warm_up(self) -> None:
        """Readiness: the model loads and a one-step generation works."""
        if self.warmup_model is None:
            self.ready = True
            return
        try:
            spec = JobSpec.build(origin="native", prompt="warm-up", model=self.warmup_model or None,
                                 steps=1, seed=0)
            # load first: with BILDWERK_COMPILE the engine compiles its sizes there, before ready
            self.generator.load(spec.request.model)
            self.generator.router.engine_for(spec.request.model).generate(spec.request)
            self.ready, self.ready_error = True, None
            self._fit_batch(spec.request.model)
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            self.ready, self.ready_error = False, f"{type(exc).__name__}: {exc}"
            log.error("warm-up failed: %s", self.ready_error)

    def _admit(self) -> int:
        """Claim and start jobs while the batcher has room to hold them (stepping, or prepared
        and waiting for their shape's group to have rows); with a batch running, only the head
        of the queue, and only when it is for the same model (strict FIFO, one model loaded)."""
        admitted = 0
        if len(self._batcher) and not self._wake.is_set() and \
                time.monotonic() - self._last_claim < self.poll_interval:
            return 0  # between steps, look for new jobs on a submission here or every poll interval
        self._wake.clear()  # before claiming: a submission from now on sets it again
        while not self._paused() and self._batcher.has_room():
            model = self._batcher.model_ref if len(self._batcher) else self._load_for_head()
            if model is ANY_MODEL or self._paused():
                break  # nothing queued, or a stop (a full store) came while the model loaded
            self._last_claim = time.monotonic()
            row = self.store.claim_next(self.worker_id, lease_seconds=self.lease_seconds, model=model)
            if row is None:
                break
            admitted += 1
            self._start(row)
        return admitted

    def _load_for_head(self) -> Any:
        """Load the model of the queue's head before claiming it (ANY_MODEL: queue empty).
        A claim counts an attempt, and a worker killed while loading ran no job's own work;
        a load that fails is retried by the job's start, which then fails with that error."""
        head = self.store.queue_head()
        if head is None:
            return ANY_MODEL
        try:
            self.generator.load(head[1])
        except Exception as exc:  # noqa: BLE001 - the job's start reports it
            log.warning("could not load model %r for job %s: %s", head[1], head[0], exc)
        else:
            self._fit_batch(head[1])
        return head[1]

    def _fit_batch(self, model_ref: str | None) -> None:
        """Fit the (empty) batch to the model just loaded: the row buckets its compiled calls pad
        to, a device sync for timing the turns, and, unless the operator set them, the cells a
        call may hold from its measured memory (CUDA; the default elsewhere). Measured once per
        loaded model; a failed measure keeps the default."""
        try:
            fit = fit_batching(self.router.engine_for(model_ref), self.router.resolve(model_ref),
                               measure=not self._cells_set)
        except Exception as exc:  # noqa: BLE001 - batching goes on with what it had
            log.warning("could not fit the batch to model %r: %s", model_ref, exc)
            return
        b = self._batcher
        b.buckets, b.sync = fit.buckets, fit.sync
        if not self._cells_set:
            self._budget = fit.budget
            b.max_cells = fit.budget.max_cells if fit.budget is not None else DEFAULT_MAX_CELLS

    def _start(self, row: Any) -> None:
        from bildwerk.images.io import decode_image

        job_id = row.id
        self._rows[job_id] = row
        self._started[job_id] = time.perf_counter()
        self.metrics.in_flight.set(len(self._rows))
        prog = self._progress.setdefault(job_id, Progress())
        prog.phase, prog.updated = "prompt", time.time()

        def on_progress(ev: ProgressEvent) -> None:
            prog.phase, prog.step, prog.total, prog.elapsed = ev.phase, ev.step, ev.total, ev.elapsed
            self._make_preview(job_id, prog, ev)
            prog.updated = time.time()
            self._notify(job_id)

        cancel = _Cancel(self, job_id)
        try:
            images = {role: decode_image(self.store.read_image(sha), what=role)
                      for role, sha in row.inputs.items()}
            spec = JobSpec.from_stored(row.request, row.options, origin=row.api or "native", **images)
            task = self.generator.start(spec, on_progress=on_progress, cancel=cancel)
        except Exception as exc:  # noqa: BLE001 - settled like a failed step
            self._settle(Outcome(job_id, None, error=exc))  # type: ignore[arg-type]
            return
        if task.batched:
            self._batcher.add(job_id, task, cancel)
        else:
            try:
                self._settle(Outcome(job_id, task, result=task.finish()))
            except Exception as exc:  # noqa: BLE001
                self._settle(Outcome(job_id, task, error=exc))

    def _settle(self, outcome: Outcome) -> None:
        """Write a job's end to the store: results, failure, cancel, or back to the queue."""
        job_id, exc = outcome.key, outcome.error
        row = self._rows.get(job_id)
        t0 = self._started.pop(job_id, time.perf_counter())
        try:
            if exc is None:
                self._succeeded(job_id, outcome.result, row, t0)  # type: ignore[arg-type]
            elif isinstance(exc, GenerationCancelled):
                if (self._drain_over() or isinstance(exc, _HandedBack)) and job_id not in self._cancelled:
                    self._record(job_id, lambda: self.store.requeue(job_id, worker_id=self.worker_id))
                else:
                    self._record(job_id, lambda: self.store.mark_cancelled(job_id, worker_id=self.worker_id),
                                 lambda: self._ended_here(row, job_id, "cancelled", t0))
            elif isinstance(exc, BildwerkError):
                self._failed(row, job_id, exc.code, str(exc), t0)
            else:
                kind = "out_of_memory" if "OutOfMemory" in type(exc).__name__ else "internal"
                log.error("job %s failed", job_id, exc_info=exc)
                self._failed(row, job_id, kind, f"{type(exc).__name__}: {exc}", t0)
                if kind == "out_of_memory":
                    self.router.models.unload()
        finally:
            self._cancelled.discard(job_id)
            self._rows.pop(job_id, None)  # after the write: leaving() must not see a gap
            self.metrics.in_flight.set(len(self._rows))

    def _succeeded(self, job_id: str, result: GenerationResult, row: Any, t0: float) -> None:
        pngs = [(result.png_bytes(i), seed) for i, seed in enumerate(result.seeds)]
        self.ready, self.ready_error = True, None

        def unsaved(exc: StoreUnwritableError) -> None:
            # Failed, not re-queued: a rerun would compute again and most likely meet the same
            # full disk; the caller hears it now and can submit again. Queued jobs wait.
            self._failed(row, job_id, exc.code, f"{exc}: the job's images could not be saved; "
                         "submit it again once the store has space", t0)

        try:
            self._record(job_id, lambda: self.store.finish(job_id, pngs, result.record(), worker_id=self.worker_id),
                         lambda: self._ended_here(row, job_id, "succeeded", t0), unwritable=unsaved)
        except Exception as exc:  # noqa: BLE001 - an I/O error, a bug: the job must end anyway
            log.error("could not save the images of job %s", job_id, exc_info=exc)
            self._failed(row, job_id, "internal",
                         f"the job's images could not be saved ({type(exc).__name__})", t0)

    def _renew(self) -> None:
        """Every few seconds: keep the leases of the jobs in the batch, drop the ones lost
        (reclaimed after a stall, or deleted), and pick up cancels asked for elsewhere."""
        now = time.monotonic()
        if now - self._last_renewal < min(2.0, self.lease_seconds / 3):
            return
        self._last_renewal = now
        keys = self._batcher.keys()
        for job_id in self.store.renew_leases(self.worker_id, keys, self.lease_seconds):
            log.warning("job %s is no longer ours (lease lost); dropping it", job_id)
            self._batcher.remove(job_id)
            self._rows.pop(job_id, None)
            self._started.pop(job_id, None)
        self.metrics.in_flight.set(len(self._rows))
        for job_id in self._batcher.keys():
            if self.store.is_cancel_requested(job_id):
                self._cancelled.add(job_id)

    def _hand_back_waiting(self) -> None:
        """A stop: jobs held but waiting for room in their shape's group go back to the queue
        now, for another worker or the next start, instead of starting in the drain."""
        for job_id in self._batcher.waiting_to_start():
            self._batcher.remove(job_id)
            self._settle(Outcome(job_id, None, error=_HandedBack("stopped before it started")))  # type: ignore[arg-type]

    def _hand_back_all(self) -> None:
        """A hard stop: every job still in the batch goes back to the queue."""
        for job_id in self._batcher.keys():
            self._batcher.remove(job_id)
            self._settle(Outcome(job_id, None, error=GenerationCancelled("stopped")))  # type: ignore[arg-type]

    def _write_end(self, job_id: str, write: Callable[[], Any], then: Callable[[], None] | None) -> None:
        """One store write at the end of a job, then ``then``. A job deleted, ended or taken
        over meanwhile is not an error; StoreUnwritableError goes up to the caller."""
        try:
            write()
        except StoreUnwritableError:
            raise
        except StoreError as exc:
            log.warning("could not record the end of job %s: %s", job_id, exc)
            return
        if then is not None:
            then()

    def _record(self, job_id: str, write: Callable[[], Any], then: Callable[[], None] | None = None,
                *, unwritable: Callable[[StoreUnwritableError], None] | None = None) -> None:
        """``_write_end``; when the store takes no writes, ``unwritable(exc)``, else the write
        waits for the probe to retry it (the job stays running, under this worker, until then)."""
        try:
            self._write_end(job_id, write, then)
        except StoreUnwritableError as exc:
            self._store_failed(exc)
            if unwritable is not None:
                unwritable(exc)
            else:
                self._unrecorded[job_id] = (write, then)

    def _write_unrecorded(self) -> None:
        """Retry the ends the store could not take; StoreUnwritableError while it still cannot."""
        for job_id, (write, then) in list(self._unrecorded.items()):
            self._write_end(job_id, write, then)
            self._unrecorded.pop(job_id, None)

    def _failed(self, row: Any, job_id: str, code: str, message: str, t0: float) -> None:
        def then() -> None:
            self.metrics.failures.labels(code).inc()
            self._ended_here(row, job_id, "failed", t0)

        self._record(job_id, lambda: self.store.fail(job_id, code, message, worker_id=self.worker_id), then)

    def _ended_here(self, row: Any, job_id: str, status: str, t0: float) -> None:
        run = time.perf_counter() - t0
        now = time.time()
        if status == "succeeded":
            self._last_run_seconds = 0.8 * self._last_run_seconds + 0.2 * run
        self.metrics.finished.labels(status).inc()
        if row is not None:
            self.metrics.run_time.labels(row.engine or "local").observe(run)
            self.metrics.latency.labels(row.api or "native").observe(max(0.0, now - row.created_at))
        p = self._progress.get(job_id)
        if p is not None:
            p.phase, p.updated, p.preview = status, now, None  # the result replaces the preview
        self._ended[job_id] = now
        self._notify(job_id)
        self._count_end()
        # Progress of ended jobs lives in the store; keep the in-memory maps small on a long run.
        cutoff = now - 60
        for k in [k for k, v in list(self._progress.items()) if v.phase in FINAL and v.updated < cutoff]:
            self._progress.pop(k, None)
        for k in [k for k, t in list(self._ended.items()) if t < cutoff]:
            self._ended.pop(k, None)
