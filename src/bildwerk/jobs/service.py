"""The job service: accept generations into the persistent queue, run them one by one.

Every face that generates (REST native, A1111, OpenAI, museum; later the web UI and pools)
submits here. A job is written to SQLite (request, prompt options, input images) *before*
the caller hears "accepted", so a restart or a kill loses nothing: on start, jobs that were
running go back to the queue and every queued job runs. The worker thread runs the prompt
pipeline, then the engine, and stores results content-addressed with the full record.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from bildwerk.engines.base import ProgressEvent
from bildwerk.engines.registry import EngineRouter
from bildwerk.errors import BildwerkError, GenerationCancelled
from bildwerk.jobs.metrics import JobMetrics
from bildwerk.jobs.store import FINISHED_STATUSES, QueueFull, Store

log = logging.getLogger("bildwerk.jobs")

FINAL = frozenset(FINISHED_STATUSES)


@dataclass
class Progress:
    phase: str = "queued"
    step: int = 0
    total: int = 0
    elapsed: float = 0.0
    updated: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        frac = self.step / self.total if self.total else (1.0 if self.phase == "done" else 0.0)
        return {"phase": self.phase, "step": self.step, "total": self.total,
                "fraction": round(frac, 4), "elapsed": round(self.elapsed, 3)}


class _Cancel:
    def __init__(self, service: JobService, job_id: str) -> None:
        self._service, self._id = service, job_id

    def is_set(self) -> bool:
        return self._id in self._service._cancelled or self._service._stopping_hard


class JobService:
    def __init__(self, store: Store, router: EngineRouter | None = None, *, max_queued: int = 64,
                 metrics: JobMetrics | None = None, pipeline: Any | None = None,
                 warmup_model: str | None = "", poll_interval: float = 0.5) -> None:
        self.store = store
        self.router = router or EngineRouter()
        self.max_queued = max_queued
        self.metrics = metrics or JobMetrics()
        self.pipeline = pipeline  # a PromptPipeline with injected backends (tests), else built per job
        self.warmup_model = warmup_model  # "" = the default model; None = no warm-up
        self.poll_interval = poll_interval
        self.progress: dict[str, Progress] = {}
        self.current: str | None = None
        self.ready = False
        self.ready_error: str | None = None
        self._cancelled: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stopping_hard = False
        self._thread: threading.Thread | None = None
        self._last_run_seconds = 10.0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        recovered = self.store.recover()
        if recovered:
            log.warning("%d job(s) were running when the last process ended; queued again", recovered)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="bildwerk-worker", daemon=True)
        self._thread.start()

    def stop(self, *, drain_timeout: float = 30.0) -> None:
        """Stop taking jobs; let the running one finish (up to ``drain_timeout``), then cancel it.

        A job cancelled this way is put back in the queue, not marked cancelled: the user did
        not ask for that, and the next start runs it.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            return
        self._thread.join(drain_timeout)
        if self._thread.is_alive():
            self._stopping_hard = True
            self._thread.join(30)
        self._thread = None

    # -- accepting --------------------------------------------------------------------------
    def submit(self, fields: dict[str, Any], *, api: str, options: Any | None = None,
               image: Image.Image | None = None, mask: Image.Image | None = None) -> Any:
        """Validate and persist a job; returns its row. Raises InvalidRequestError, QueueFull."""
        from bildwerk.engines.openai_engine import is_remote_model
        from bildwerk.images.io import encode_png
        from bildwerk.requests import MAX_SEED, build_request

        fields = {k: v for k, v in fields.items() if v is not None and k not in ("image", "mask")}
        if fields.get("seed") is None:
            fields["seed"] = secrets.randbelow(MAX_SEED + 1)
        try:
            build_request(**fields, image=image, mask=mask)  # fail now, not in the worker
            if is_remote_model(fields.get("model")):
                from bildwerk.engines.openai_engine import model_spec, remote_model_name

                model_spec(remote_model_name(fields["model"]))
            else:
                from bildwerk.models.loader import resolve_model

                resolve_model(fields.get("model"))  # an unknown model is a 404 now
            if options is not None and getattr(options, "style", None):
                from bildwerk.prompts.styles import get_style

                get_style(options.style)
        except BildwerkError:
            self.metrics.rejected.labels("invalid").inc()
            raise
        inputs = {}
        if image is not None:
            inputs["image"] = encode_png(image)
        if mask is not None:
            inputs["mask"] = encode_png(mask)
        engine = "openai" if is_remote_model(fields.get("model")) else "local"
        opts = options.model_dump(mode="json", exclude_unset=True) if options is not None else None
        try:
            row = self.store.create_job(request=fields, api=api, engine=engine, options=opts, inputs=inputs,
                                        max_queued=self.max_queued)
        except QueueFull as exc:
            self.metrics.rejected.labels("queue_full").inc()
            exc.retry_after = self.retry_after()  # type: ignore[attr-defined]  # -> Retry-After
            raise
        self.metrics.accepted.labels(api).inc()
        self.progress[row.id] = Progress()
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
        return outcome

    def status(self, job_id: str) -> dict[str, Any] | None:
        row = self.store.get(job_id)
        if row is None:
            return None
        prog = self.progress.get(job_id)
        if row.status in FINAL:
            prog_d = {"phase": row.status, "step": 1, "total": 1, "fraction": 1.0, "elapsed": 0.0}
        else:
            prog_d = (prog or Progress()).as_dict()
        position = self.store.queue_position(job_id) if row.status == "queued" else 0
        return {"row": row, "progress": prog_d, "position": position or 0}

    async def wait(self, job_id: str, timeout: float = 600.0) -> Any:
        """Wait (without blocking the event loop) until a job ends; returns its row."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            row = self.store.get(job_id)
            if row is None or row.status in FINAL:
                return row
            if time.monotonic() > deadline:
                return row
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    # -- the worker -------------------------------------------------------------------------
    def _loop(self) -> None:
        self._warm_up()
        while not self._stop.is_set():
            try:
                row = self.store.claim_next()
                if row is None:
                    self._wake.wait(self.poll_interval)  # polling also finds jobs queued elsewhere
                    self._wake.clear()
                    continue
                self._run(row)
            except Exception:  # noqa: BLE001 - the worker must outlive any one failure
                log.exception("worker error; going on")
                time.sleep(self.poll_interval)

    def _warm_up(self) -> None:
        """Readiness: the model loads and a one-step generation works."""
        if self.warmup_model is None:
            self.ready = True
            return
        from bildwerk.requests import build_request

        try:
            req = build_request(prompt="warm-up", model=self.warmup_model or None, steps=1, seed=0)
            self.router.engine_for(req.model).generate(req)
            self.ready, self.ready_error = True, None
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure
            self.ready, self.ready_error = False, f"{type(exc).__name__}: {exc}"
            log.error("warm-up failed: %s", self.ready_error)

    def _run(self, row: Any) -> None:
        from bildwerk.images.io import decode_image
        from bildwerk.prompts.pipeline import PromptOptions, apply_to_request_fields
        from bildwerk.requests import build_request

        job_id = row.id
        self.current = job_id
        self.metrics.in_flight.set(1)
        prog = self.progress.setdefault(job_id, Progress())
        prog.phase, prog.updated = "prompt", time.time()
        t0 = time.perf_counter()
        try:
            fields = dict(row.request)
            for role in ("image", "mask"):
                sha = row.inputs.get(role)
                if sha:
                    fields[role] = decode_image(self.store.read_image(sha), what=role)
            options = PromptOptions(**row.options) if row.options else PromptOptions()
            fields = apply_to_request_fields(fields, options, self.pipeline)
            request = build_request(**fields)
            engine = self.router.engine_for(request.model)

            def on_progress(ev: ProgressEvent) -> None:
                prog.phase, prog.step, prog.total, prog.elapsed = ev.phase, ev.step, ev.total, ev.elapsed
                prog.updated = time.time()

            result = engine.generate(request, on_progress=on_progress, cancel=_Cancel(self, job_id))
            pngs = [(result.png_bytes(i), seed) for i, seed in enumerate(result.seeds)]
            self.store.finish(job_id, pngs, result.record())
            self._ended(row, "succeeded", t0)
            self.ready, self.ready_error = True, None
        except GenerationCancelled:
            if self._stopping_hard and job_id not in self._cancelled:
                self._record(lambda: self.store.requeue(job_id))  # shutdown: run it next start
            elif self._record(lambda: self.store.mark_cancelled(job_id)):
                self._ended(row, "cancelled", t0)
        except BildwerkError as exc:
            self._failed(row, exc.code, str(exc), t0)
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the worker
            kind = "out_of_memory" if "OutOfMemory" in type(exc).__name__ else "internal"
            log.exception("job %s failed", job_id)
            self._failed(row, kind, f"{type(exc).__name__}: {exc}", t0)
            if kind == "out_of_memory":
                self.router.models.unload()
        finally:
            self.current = None
            self.metrics.in_flight.set(0)
            self._cancelled.discard(job_id)

    def _record(self, write) -> bool:
        """A store write at the end of a job; a job deleted or ended meanwhile is not an error."""
        from bildwerk.jobs.store import StoreError

        try:
            write()
            return True
        except StoreError as exc:
            log.warning("could not record the end of a job: %s", exc)
            return False

    def _failed(self, row: Any, code: str, message: str, t0: float) -> None:
        if self._record(lambda: self.store.fail(row.id, code, message)):
            self.metrics.failures.labels(code).inc()
            self._ended(row, "failed", t0)

    def _ended(self, row: Any, status: str, t0: float) -> None:
        run = time.perf_counter() - t0
        if status == "succeeded":
            self._last_run_seconds = 0.8 * self._last_run_seconds + 0.2 * run
        self.metrics.finished.labels(status).inc()
        self.metrics.run_time.labels(row.engine or "local").observe(run)
        self.metrics.latency.labels(row.api or "native").observe(max(0.0, time.time() - row.created_at))
        p = self.progress.get(row.id)
        if p is not None:
            p.phase, p.updated = status, time.time()
        # Progress of ended jobs lives in the store; keep the in-memory map small on a long run.
        cutoff = time.time() - 60
        for job_id in [k for k, v in list(self.progress.items()) if v.phase in FINAL and v.updated < cutoff]:
            self.progress.pop(job_id, None)
