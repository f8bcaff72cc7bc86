"""Image pools as a service: plans kept in the job store, runs through the job queue.

``PoolService`` is what the REST face (server/routes_pools.py) drives. A pool is created from
a plan (or from a topic, through the planner) in status ``draft``; a person reviews and edits
the plan; ``start`` runs it: one runner thread per running pool (pool/run.py's
``PoolRunner`` with the :class:`~bildwerk.pool.queue.QueueExecutor`), writing the pool's
folder ``<store>/pools/<pool id>/`` (pool/folder.py: images/, rejected/, metadata.csv,
sheets, report). ``pause`` stops submitting (what is queued still runs and is settled);
``resume`` runs a new runner on the same folder; ``cancel`` stops and cancels the pool's
queued jobs. Every step of a run is an event (``RunEvent.as_dict()``) kept for the event
streams. Pools that were running when the server stopped (or died) resume at the next start,
and the executor's look-up by (pool, item) makes them repeat nothing.

Statuses: draft, running, paused, cancelled, complete, short (the plan's prompts ran out of
seeds before every kind reached its target), failed (the error says why).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bildwerk.core.errors import BildwerkError, InvalidRequestError, NotConfiguredError
from bildwerk.jobs.service import JobService
from bildwerk.jobs.store import PoolNotFoundError, PoolRow, PoolStateError, Store, StoreError
from bildwerk.jobs.watchers import Watchers
from bildwerk.pool.folder import PLAN_FILE, ManifestRow, PoolFolder
from bildwerk.pool.plan import PoolPlan, slug
from bildwerk.pool.queue import DEFAULT_WINDOW, POLL_SECONDS, QueueExecutor
from bildwerk.pool.render import error_text
from bildwerk.pool.run import PoolFailing, PoolRunner

log = logging.getLogger("bildwerk.pool")

POOLS_DIR = "pools"
# What each action may start from (pools.py lists the transitions).
STARTABLE = ("draft",)
PAUSABLE = ("running",)
RESUMABLE = ("paused", "short", "failed")
CANCELLABLE = ("draft", "running", "paused", "short", "failed")
EDITABLE = ("draft", "paused", "short", "failed")
ENDED = ("cancelled", "complete", "short", "failed")
# Progress events kept per pool for the event streams (a late or slow client gets a fresh
# snapshot of the counts instead of what it missed).
EVENTS_KEPT = 512
ITEM_STATUSES = ("accepted", "rejected", "failed")
ITEM_ID_RE = re.compile(r"[0-9a-f]{16}")  # plan.item_id
# Pool folders kept open (a manifest connection each) and how long one must have been unused
# before it is closed to make room; an ended pool's events kept for late streams.
MAX_OPEN_FOLDERS = 64
FOLDER_IDLE_SECONDS = 60.0
EVENTS_KEPT_AFTER_END = 8


class PoolServiceStopping(BildwerkError):
    code = "shutting_down"
    retry_after = 5

    def __init__(self) -> None:
        super().__init__("the server is stopping; pools that were running resume after the next start")


def default_gates(plan: PoolPlan) -> Any:
    """The runner's gates for a plan: None, so the runner builds them from the plan's gate
    settings (pool/gates.py). Tests pass ``gates=lambda plan: False`` to run without any."""
    return None


@dataclass
class _Run:
    """A pool's runner thread and what its owner wants of it next."""

    pool_id: str
    want: str = "running"  # running | paused | cancelled
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


@dataclass
class _Events:
    """A pool's recent events: (sequence number, event name, data), numbered per pool."""

    seq: int = 0
    events: deque[tuple[int, str, dict[str, Any]]] = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))


class PoolService:
    def __init__(self, store: Store, jobs: JobService, root: str | Path | None = None, *,
                 window: int = DEFAULT_WINDOW, gates: Callable[[PoolPlan], Any] = default_gates,
                 report: bool = True, default_model: str | None = None,
                 poll: float = POLL_SECONDS) -> None:
        """``gates(plan)``: what the runner gets as ``gates`` (None: built from the plan;
        False: none). ``report``: write the report and the contact sheets at the end of each
        run. ``default_model``: for plans that name none."""
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.store = store
        self.jobs = jobs
        self.root = Path(root) if root is not None else Path(store.root) / POOLS_DIR
        self.window = window
        self.gates = gates
        self.report = report
        self.default_model = default_model
        self.poll = poll
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._folders: dict[str, PoolFolder] = {}
        self._folder_used: dict[str, float] = {}
        self._plans: dict[str, tuple[float, PoolPlan]] = {}  # pool id -> (row's updated_at, plan)
        self._stopping = False
        self._events_lock = threading.Lock()
        self._events: dict[str, _Events] = {}
        self._watchers = Watchers()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Resume the pools that were running when the server stopped; returns how many."""
        self._stopping = False
        resumed = 0
        rows = self.store.list_pools(status="running", limit=1_000_000)
        with self._lock:
            for row in rows:
                if row.id not in self._runs:
                    self._launch(row.id)
                    resumed += 1
        if resumed:
            log.warning("%d pool(s) were running when the server stopped; resumed", resumed)
        return resumed

    def begin_stop(self) -> None:
        """Stop every runner submitting (returns at once). The pools stay ``running`` in the
        store, so the next start resumes them; their queued jobs stay queued."""
        with self._lock:
            self._stopping = True
            for run in self._runs.values():
                run.stop.set()
        self._wake_all()

    def stop(self, timeout: float = 10.0) -> None:
        self.begin_stop()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [r.thread for r in self._runs.values() if r.thread is not None]
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for pool_id, folder in list(self._folders.items()):
                if pool_id not in self._runs:
                    folder.close()
                    self._folders.pop(pool_id, None)

    @property
    def stopping(self) -> bool:
        return self._stopping or self.jobs.stopping

    # ------------------------------------------------------------------ plans

    def check_plan(self, plan: PoolPlan) -> None:
        """What would fail every image of the plan (its model, style and settings), as the
        error a client should get now rather than a failed pool later."""
        try:
            QueueExecutor(self.jobs, "check", default_model=self.default_model).check(plan)
        except ValidationError as exc:  # a prompt option the settings carry (translate)
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InvalidRequestError(f"the plan: settings.{where}: {err['msg']}") from None
        except InvalidRequestError as exc:
            if type(exc) is not InvalidRequestError:  # not_configured, an image error: as they are
                raise
            raise InvalidRequestError(f"the plan's settings: {str(exc).removeprefix('invalid request: ')}") from None

    def make_plan(self, topic: str, **options: Any) -> PoolPlan:
        """A plan from a topic, by the planner (pool/planner.py): an LLM, or offline."""
        try:
            from bildwerk.pool.planner import make_plan
        except ImportError:
            raise NotConfiguredError("this server cannot plan from a topic (no planner installed); "
                                     "send a plan instead") from None
        return make_plan(topic, **options)

    # ------------------------------------------------------------------ pools

    def create(self, plan: PoolPlan) -> PoolRow:
        self.check_plan(plan)
        row = self.store.create_pool(plan=plan.dump(), name=plan.pool, topic=plan.topic)
        self._emit(row.id, "status", {"id": row.id, "status": row.status})
        return row

    def get(self, pool_id: str) -> PoolRow:
        row = self.store.get_pool(pool_id)
        if row is None:
            raise PoolNotFoundError(pool_id)
        return row

    def list_pools(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> list[PoolRow]:
        return self.store.list_pools(status=status, limit=limit, offset=offset)

    def plan_of(self, row: PoolRow) -> PoolPlan:
        """The pool's plan, validated (kept while the row is unchanged: a plan of many
        thousand prompts takes a while to validate)."""
        with self._lock:
            cached = self._plans.get(row.id)
        if cached is not None and cached[0] == row.updated_at:
            return cached[1]
        plan = PoolPlan.from_data(row.plan, where=f"the stored plan of pool {row.id}")
        with self._lock:
            self._plans[row.id] = (row.updated_at, plan)
            while len(self._plans) > MAX_OPEN_FOLDERS:
                self._plans.pop(next(iter(self._plans)))
        return plan

    def update_plan(self, pool_id: str, plan: PoolPlan) -> PoolRow:
        """Replace the plan of a pool that is not running (draft, paused, short, failed). The
        pool's name cannot change once it has run: its item ids derive from it."""
        row = self.get(pool_id)
        if row.status not in EDITABLE:
            raise PoolStateError(pool_id, row.status, "edit the plan of", EDITABLE)
        if plan.pool != row.name and row.status != "draft":
            raise InvalidRequestError(
                f"the plan: pool: the name cannot change once the pool has run (it is {row.name!r}; "
                "its item ids derive from it)")
        self.check_plan(plan)
        with self._lock:
            changed = self.store.update_pool(pool_id, action="edit the plan of", allowed=EDITABLE,
                                             plan=plan.dump(), name=plan.pool, topic=plan.topic)
        self._emit(pool_id, "status", {"id": pool_id, "status": changed.status, "plan": "changed"})
        return changed

    def start_pool(self, pool_id: str) -> PoolRow:
        return self._run_pool(pool_id, "start", STARTABLE)

    def resume_pool(self, pool_id: str) -> PoolRow:
        return self._run_pool(pool_id, "resume", RESUMABLE)

    def _run_pool(self, pool_id: str, action: str, allowed: tuple[str, ...]) -> PoolRow:
        row = self.get(pool_id)
        if row.status not in allowed:
            raise PoolStateError(pool_id, row.status, action, allowed)
        self.check_plan(self.plan_of(row))  # the model may have gone since the plan was made
        with self._lock:
            if self.stopping:
                raise PoolServiceStopping()
            row = self.store.update_pool(pool_id, action=action, allowed=allowed, status="running", error=None)
            run = self._runs.get(pool_id)
            if run is not None:  # still winding down after a pause: it runs again when it ends
                run.want = "running"
            else:
                self._launch(pool_id)
        self._emit(pool_id, "status", {"id": pool_id, "status": row.status})
        return row

    def _stop_run(self, pool_id: str, want: str) -> None:
        """Tell the pool's runner (if one works on it here) to stop and what it ends as."""
        run = self._runs.get(pool_id)
        if run is not None:
            run.want = want
            run.stop.set()

    def pause_pool(self, pool_id: str) -> PoolRow:
        """Stop submitting; the pool's queued jobs still run and are settled into its folder."""
        with self._lock:
            row = self.store.update_pool(pool_id, action="pause", allowed=PAUSABLE, status="paused")
            self._stop_run(pool_id, "paused")
        self._emit(pool_id, "status", {"id": pool_id, "status": row.status})
        return row

    def cancel_pool(self, pool_id: str) -> PoolRow:
        """Stop for good: nothing new is submitted and the pool's queued jobs are cancelled
        (the running ones stop at their next step). What was made stays in the folder."""
        with self._lock:
            row = self.store.update_pool(pool_id, action="cancel", allowed=CANCELLABLE, status="cancelled")
            self._stop_run(pool_id, "cancelled")
        self._cancel_jobs(pool_id)
        self._emit(pool_id, "status", {"id": pool_id, "status": row.status})
        return row

    def _cancel_jobs(self, pool_id: str) -> int:
        n = 0
        for job_id in self.store.pool_active_jobs(pool_id):
            try:
                if self.jobs.cancel(job_id) is not None:
                    n += 1
            except StoreError:  # ended or deleted meanwhile
                pass
        return n

    def running_here(self, pool_id: str) -> bool:
        """A runner works on the pool in this process (also while it winds down)."""
        with self._lock:
            return pool_id in self._runs

    def state(self, pool_id: str) -> tuple[PoolRow, bool]:
        """The pool's row and whether a runner works on it here, read together."""
        with self._lock:
            return self.get(pool_id), pool_id in self._runs

    # ------------------------------------------------------------------ the runner

    def _launch(self, pool_id: str) -> None:
        run = _Run(pool_id)
        run.thread = threading.Thread(target=self._run, args=(run,), name=f"bildwerk-pool-{pool_id[:8]}",
                                      daemon=True)
        self._runs[pool_id] = run
        run.thread.start()

    def _run(self, run: _Run) -> None:
        pool_id = run.pool_id
        while True:
            outcome, error, summary = "error", None, None
            try:
                plan = self.plan_of(self.get(pool_id))
                folder = self._folder(pool_id, plan)
                executor = QueueExecutor(self.jobs, pool_id, self.window, default_model=self.default_model,
                                         poll=self.poll)
                runner = PoolRunner(folder, executor, gates=self.gates(plan), report=self.report,
                                    on_event=lambda ev: self._emit(pool_id, "progress", {"id": pool_id,
                                                                                       **ev.as_dict()}))
                summary = runner.run(stop=lambda: run.stop.is_set() or self.stopping)
                outcome = summary.outcome
            except PoolFailing as exc:
                outcome, error = "failing", str(exc)
            except Exception as exc:  # noqa: BLE001 - the pool fails with the reason; the server goes on
                log.error("pool %s failed", pool_id, exc_info=exc)
                outcome, error = "error", error_text(exc)
            with self._lock:
                if self.stopping:  # a shutdown: still running in the store; the next start resumes it
                    self._runs.pop(pool_id, None)
                    self._wake(pool_id)
                    return
                if outcome == "stopped" and run.want == "running":  # resumed while winding down
                    run.stop.clear()
                    continue
                if run.want == "cancelled":
                    status = "cancelled"
                elif outcome in ("complete", "short"):
                    status = outcome
                elif outcome == "stopped":
                    status = run.want
                else:
                    status = "failed"
                try:
                    self.store.update_pool(pool_id, action="end", status=status, error=error)
                except StoreError as exc:
                    log.error("could not record the end of pool %s: %s", pool_id, exc)
                self._runs.pop(pool_id, None)
            if status == "cancelled":
                self._cancel_jobs(pool_id)  # any submitted in the moment the cancel came
            made = summary.made if summary is not None else 0
            log.info("pool %s: %s (%d picture(s) this run)", pool_id, status, made)
            self._emit(pool_id, "status", {"id": pool_id, "status": status, "error": error})
            self._trim_events(pool_id)
            return

    # ------------------------------------------------------------------ folders

    def folder_path(self, pool_id: str) -> Path:
        return self.root / pool_id

    def _folder(self, pool_id: str, plan: PoolPlan | None = None) -> PoolFolder | None:
        """The pool's folder, kept open while it is used (None: nothing made yet and no plan
        to make it with). With a plan, the folder runs that plan (an edited plan replaces its
        copy)."""
        with self._lock:
            folder = self._folders.get(pool_id)
            if folder is None:
                path = self.folder_path(pool_id)
                if plan is None and not (path / PLAN_FILE).is_file():
                    return None
                folder = PoolFolder(path, plan)
                self._folders[pool_id] = folder
                self._close_idle_folders()
            elif plan is not None and folder.plan.dump() != plan.dump():
                plan.save(folder.root / PLAN_FILE)
                folder.plan = plan
            self._folder_used[pool_id] = time.monotonic()
            return folder

    def _close_idle_folders(self) -> None:
        """Beyond MAX_OPEN_FOLDERS, close the folders longest unused (each holds a database
        connection): never one a runner works on, nor one used in the last minute."""
        if len(self._folders) <= MAX_OPEN_FOLDERS:
            return
        now = time.monotonic()
        idle = sorted((t, pid) for pid, t in self._folder_used.items()
                      if pid not in self._runs and now - t > FOLDER_IDLE_SECONDS and pid in self._folders)
        for _, pid in idle[:len(self._folders) - MAX_OPEN_FOLDERS]:
            self._folders.pop(pid).close()
            self._folder_used.pop(pid, None)

    def counts(self, pool_id: str, plan: PoolPlan) -> dict[str, Any]:
        """Per kind: target, accepted, rejected, failed; and the totals."""
        folder = self._folder(pool_id)
        have = folder.counts() if folder is not None else {}
        kinds = []
        for k in plan.kinds:
            c = have.get(k.kind, {})
            kinds.append({"kind": k.kind, "target": k.images, "planned": k.planned,
                          **{s: int(c.get(s, 0)) for s in ITEM_STATUSES}})
        return {"target": plan.images, "planned": plan.planned,
                "accepted": sum(min(k["accepted"], k["target"]) for k in kinds),
                "rejected": sum(k["rejected"] for k in kinds), "failed": sum(k["failed"] for k in kinds),
                "kinds": kinds}

    def images(self, pool_id: str, *, status: str = "accepted", kind: str | None = None,
               location: str | None = None, offset: int = 0, limit: int = 50) -> tuple[list[ManifestRow], int]:
        """A page of the pool's pictures (in the order they were made) and how many match."""
        if status not in ITEM_STATUSES:
            raise InvalidRequestError(f"status must be one of {', '.join(ITEM_STATUSES)}")
        self.get(pool_id)
        folder = self._folder(pool_id)
        if folder is None:
            return [], 0
        return (folder.rows(status=status, kind=kind, location=location, limit=limit, offset=offset),
                folder.count(status=status, kind=kind, location=location))

    def image_file(self, pool_id: str, item_id: str) -> Path | None:
        """The PNG of one item (accepted or rejected), or None. Item ids are 16 hex digits
        and kinds are slugs in file names, so the name is built, never taken from a client."""
        folder = self._folder(pool_id)
        if folder is None or not ITEM_ID_RE.fullmatch(item_id):
            return None
        for kind in folder.counts():
            for part in ("images", "rejected"):
                path = self._inside(folder.root, f"{part}/{slug(kind)}/{item_id}.png")
                if path is not None and path.is_file():
                    return path
        return None

    def sheet_file(self, pool_id: str, kind: str) -> Path | None:
        """A kind's contact sheet, as the last run's report names it."""
        import json

        report = self.report_file(pool_id)
        folder = self._folder(pool_id)
        if report is None or folder is None:
            return None
        try:
            sheets = json.loads(report.read_text("utf-8")).get("sheets") or {}
        except (OSError, ValueError, AttributeError):
            return None
        rel = sheets.get(kind) if isinstance(sheets, dict) else None
        path = self._inside(folder.root, rel) if isinstance(rel, str) and rel.endswith(".png") else None
        return path if path is not None and path.is_file() else None

    def report_file(self, pool_id: str) -> Path | None:
        folder = self._folder(pool_id)
        path = self._inside(folder.root, "report.json") if folder is not None else None
        return path if path is not None and path.is_file() else None

    def export_files(self, pool_id: str) -> tuple[bytes, list[tuple[str, Path]]]:
        """metadata.csv (as of now) and (name in the archive, file) of every accepted picture:
        the imagefolder ``bildwerk train`` reads."""
        import csv
        import io

        from bildwerk.pool.folder import METADATA_COLUMNS

        self.get(pool_id)
        folder = self._folder(pool_id)
        rows = folder.metadata_rows() if folder is not None else []
        files = []
        kept = []
        for r in rows:
            path = self._inside(folder.root, r["file_name"]) if folder is not None else None
            if path is not None and path.is_file():
                files.append((r["file_name"], path))
                kept.append(r)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METADATA_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        return buf.getvalue().encode("utf-8"), files

    @staticmethod
    def _inside(root: Path, rel: str) -> Path | None:
        """``root/rel`` when it resolves inside ``root`` (never a way out of the folder)."""
        base = root.resolve()
        path = (base / rel).resolve()
        return path if path.is_relative_to(base) and path != base else None

    # ------------------------------------------------------------------ events

    def _emit(self, pool_id: str, event: str, data: dict[str, Any]) -> None:
        with self._events_lock:
            kept = self._events.setdefault(pool_id, _Events())
            kept.seq += 1
            kept.events.append((kept.seq, event, data))
        self._wake(pool_id)

    def _trim_events(self, pool_id: str) -> None:
        """A run ended: keep only its last events (streams opened now want the end)."""
        with self._events_lock:
            kept = self._events.get(pool_id)
            if kept is not None:
                last = list(kept.events)[-EVENTS_KEPT_AFTER_END:]
                kept.events.clear()
                kept.events.extend(last)

    def events_after(self, pool_id: str, seen: int) -> tuple[list[tuple[int, str, dict[str, Any]]], bool]:
        """The pool's events after its sequence number ``seen``, and whether some of those
        were dropped already (the caller then sends a fresh snapshot of the counts)."""
        with self._events_lock:
            kept = self._events.get(pool_id)
            events = list(kept.events) if kept is not None else []
        new = [e for e in events if e[0] > seen]
        return new, bool(new) and new[0][0] > seen + 1

    def last_event(self, pool_id: str) -> int:
        with self._events_lock:
            kept = self._events.get(pool_id)
            return kept.seq if kept is not None else 0

    def _wake(self, pool_id: str) -> None:
        self._watchers.wake(pool_id)

    def _wake_all(self) -> None:
        self._watchers.wake_all()

    async def next_event(self, pool_id: str, seen: int, timeout: float) -> int:
        """Wait (without blocking the event loop) for an event of the pool after ``seen``, at
        most ``timeout`` seconds; returns the newest sequence number."""
        return await self._watchers.after(pool_id, lambda: self.last_event(pool_id), seen, timeout)


__all__ = ["ENDED", "PoolService", "PoolServiceStopping", "default_gates"]
