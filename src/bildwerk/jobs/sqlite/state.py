"""The job state machine: creating, claiming (with worker leases), ending, cancelling,
re-queueing and reclaiming jobs, and deleting ended ones. Each transition is one
``BEGIN IMMEDIATE`` transaction that first reads the job's status under the write lock.

Several worker processes may share a store: each claims with its own worker id
(:func:`~bildwerk.jobs.sqlite.leases.new_worker_id`) and a lease it renews while it
works, and ends its jobs passing that id, so a worker whose lease was lost is refused
instead of overwriting the run of the worker that took the job over.
"""

from __future__ import annotations

import enum
import json
import math
import re
import socket
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from bildwerk.core.errors import InvalidRequestError
from bildwerk.jobs.sqlite.blobs import Blobs
from bildwerk.jobs.sqlite.errors import (
    JobExistsError,
    JobNotFoundError,
    JobStateError,
    PoolNotFoundError,
    QueueFull,
)
from bildwerk.jobs.sqlite.leases import DEFAULT_LEASE_SECONDS, holder_is_dead
from bildwerk.jobs.sqlite.rows import (
    APIS,
    ENGINES,
    INPUT_ROLES,
    JobRow,
    chunks,
    now,
    request_columns,
)
from bildwerk.jobs.sqlite.search import Search

# A job whose process died this many times while running it is failed, not retried.
DEFAULT_MAX_ATTEMPTS = 3

# Job ids end up in export file names, so only filename-safe characters.
_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class _AnyModel(enum.Enum):
    ANY = "any"


# claim_next(model=ANY_MODEL), the default: the head of the queue, whatever its model.
ANY_MODEL = _AnyModel.ANY


def _check_lease(worker_id: str, lease_seconds: float) -> None:
    if not isinstance(worker_id, str) or not worker_id:
        raise InvalidRequestError(f"worker_id must be a non-empty string, got {worker_id!r}")
    if not (isinstance(lease_seconds, (int, float)) and 0 < lease_seconds < math.inf):
        raise InvalidRequestError(f"lease_seconds must be a number > 0, got {lease_seconds!r}")


class States(Search, Blobs):
    def create_job(
        self,
        *,
        request: dict[str, Any],
        api: str,
        engine: str,
        options: dict[str, Any] | None = None,
        inputs: dict[str, bytes] | None = None,
        max_queued: int | None = None,
        job_id: str | None = None,
        pool_id: str | None = None,
        pool_item: str | None = None,
    ) -> JobRow:
        """Queue a job. ``request`` is ``GenerationRequest.record()``; ``inputs`` maps
        "image"/"mask" to PNG bytes. Raises QueueFull when ``max_queued`` jobs are
        already queued or running, JobExistsError for a reused ``job_id``.
        ``pool_id``/``pool_item``: the image pool (which must exist, else
        PoolNotFoundError) and the plan item the job makes."""
        if api not in APIS:
            raise InvalidRequestError(f"unknown api {api!r}; expected one of {', '.join(APIS)}")
        if engine not in ENGINES:
            raise InvalidRequestError(
                f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}"
            )
        if not isinstance(request, dict):
            raise InvalidRequestError("request must be a dict (GenerationRequest.record())")
        inputs = inputs or {}
        for role in inputs:
            if role not in INPUT_ROLES:
                raise InvalidRequestError(
                    f"unknown input role {role!r}; expected one of {', '.join(INPUT_ROLES)}"
                )
        if job_id is None:
            job_id = uuid.uuid4().hex
        elif not isinstance(job_id, str) or not _JOB_ID_RE.fullmatch(job_id):
            raise InvalidRequestError(
                f"invalid job id {job_id!r}: 1-64 letters, digits, '-' or '_'"
            )
        if max_queued is not None and max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, got {max_queued}")
        if (pool_id is None) != (pool_item is None):
            raise InvalidRequestError("a pool job names both its pool and its plan item")
        # Serialise before touching the disk, so a non-JSON request fails cleanly.
        request_json = json.dumps(request, ensure_ascii=False)
        options_json = json.dumps(options or {}, ensure_ascii=False)
        columns = request_columns(request)

        # Cheap early refusal: a full queue should not leave staged files behind.
        if max_queued is not None and inputs:
            self._check_depth(self._conn(), max_queued)
        staged = {role: self._stage(data, f"{role} input") for role, data in inputs.items()}

        with self.transaction() as conn:
            if max_queued is not None:
                self._check_depth(conn, max_queued)
            for image in staged.values():
                self._ensure_image(conn, *image)
            try:
                conn.execute(
                    "INSERT INTO jobs (id, created_at, status, api, engine, model, mode, prompt, "
                    "original_prompt, language, seed, search_text, request_json, options_json, "
                    "pool_id, pool_item) "
                    "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        now(),
                        api,
                        engine,
                        columns["model"],
                        columns["mode"],
                        columns["prompt"],
                        columns["original_prompt"],
                        columns["language"],
                        columns["seed"],
                        columns["search_text"],
                        request_json,
                        options_json,
                        pool_id,
                        pool_item,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if "jobs.id" in str(exc):
                    raise JobExistsError(job_id) from exc
                if pool_id is not None and "FOREIGN KEY" in str(exc):
                    raise PoolNotFoundError(pool_id) from exc
                raise
            conn.executemany(
                "INSERT INTO job_inputs (job_id, role, sha256) VALUES (?, ?, ?)",
                [(job_id, role, image[0]) for role, image in staged.items()],
            )
            return self._get(conn, job_id)  # type: ignore[return-value]

    @staticmethod
    def _check_depth(conn: sqlite3.Connection, limit: int) -> None:
        depth = conn.execute(
            "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
        ).fetchone()[0]
        if depth >= limit:
            raise QueueFull(depth, limit)

    # -- claiming, leases and taking jobs back

    def queue_head(self) -> tuple[str, str | None] | None:
        """(id, model) of the job ``claim_next`` would take now, without taking it: a
        worker loads that model first, so the load is never part of the job's attempt."""
        row = self._conn().execute(
            "SELECT id, model FROM jobs WHERE status = 'queued' ORDER BY created_at, rowid LIMIT 1"
        ).fetchone()
        return None if row is None else (row["id"], row["model"])

    def claim_next(
        self,
        worker_id: str | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        model: str | None | _AnyModel = ANY_MODEL,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> JobRow | None:
        """Atomically move the head of the queue (the oldest queued job) to running and
        return it; None when the queue is empty or its head is not for ``model``.

        With ``worker_id`` (from :func:`new_worker_id`) the job is leased to that worker
        for ``lease_seconds``, and in the same transaction expired leases and dead local
        workers' jobs are taken back first (:meth:`reclaim_expired`, with
        ``max_attempts``), so the queue heals while any worker is polling; this worker's
        own jobs too, should it have let their leases run out. Without it the
        claim has no lease and nothing is reclaimed, as before leases: such a claim is
        safe only while one process works the store, since any other process's
        ``reclaim_expired()`` takes unleased running jobs back.

        ``model`` (a model reference, or None for the server default) claims the head
        only if it is for that model: a worker can join jobs to a batch on the model it
        has loaded without overtaking older jobs for other models (strict FIFO).

        The claim counts an attempt: claim only a job you start at once (model loaded,
        see :meth:`queue_head`), so a worker killed while starting up or loading a model
        charges no job, and ``max_attempts`` counts runs that a death cut short.
        """
        if worker_id is not None:
            _check_lease(worker_id, lease_seconds)
        with self.transaction() as conn:
            if worker_id is not None:
                self._reclaim(conn, max_attempts)
            row = conn.execute(
                "SELECT id, model FROM jobs WHERE status = 'queued' "
                "ORDER BY created_at, rowid LIMIT 1"
            ).fetchone()
            if row is None or (model is not ANY_MODEL and row["model"] != model):
                return None  # (str | None) == (str | None): NULL-safe, like SQL's IS
            t = now()
            conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1, "
                "worker_id = ?, lease_until = ? WHERE id = ?",
                (t, worker_id, None if worker_id is None else t + lease_seconds, row["id"]),
            )
            return self._get(conn, row["id"])

    def renew_leases(
        self, worker_id: str, job_ids: Iterable[str], lease_seconds: float = DEFAULT_LEASE_SECONDS
    ) -> set[str]:
        """Extend by ``lease_seconds`` from now the leases of those ``job_ids`` still
        running under ``worker_id``; returns the ids that could NOT be renewed (taken
        back, claimed by another worker, ended, deleted): the worker should abandon them.

        A lease that ran out but was not yet taken back is renewed: nobody else has the
        job. Renew well inside the lease (every third of it, say).
        """
        ids = list(dict.fromkeys(job_ids))
        _check_lease(worker_id, lease_seconds)
        if not ids:
            return set()
        renewed: set[str] = set()
        with self.transaction() as conn:
            lease_until = now() + lease_seconds
            for chunk in chunks(ids):
                marks = ",".join("?" * len(chunk))
                renewed |= {
                    r[0]
                    for r in conn.execute(
                        f"UPDATE jobs SET lease_until = ? WHERE id IN ({marks}) "
                        "AND status = 'running' AND worker_id = ? RETURNING id",
                        (lease_until, *chunk, worker_id),
                    )
                }
        return set(ids) - renewed

    def reclaim_expired(self, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
        """Take back running jobs whose worker is gone; returns how many were changed.

        Gone: the lease ran out (``lease_until`` < now), the job has no lease (claimed
        without a worker id, or left running by a version before leases), or the worker
        id names this host and its process no longer exists. Such a job goes back to its
        place in the queue, except when its cancellation was requested (cancelled) or it
        already ran ``max_attempts`` times (failed with error_type "interrupted": a job
        that kills its worker must not loop forever). Jobs of live workers are left
        alone. One write transaction: two processes reclaiming at once change each job
        once.
        """
        with self.transaction() as conn:
            return self._reclaim(conn, max_attempts)

    def recover(self, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
        """At startup: jobs left running by a dead process; returns how many were changed.

        :meth:`reclaim_expired` under its old name: safe while other workers live, whose
        unexpired leases are left alone. After a SIGKILL a restarted server gets its own
        jobs back at once (its old pid is gone); a job whose worker ran on another host
        (or container) comes back when its lease runs out.
        """
        return self.reclaim_expired(max_attempts=max_attempts)

    def _reclaim(self, conn: sqlite3.Connection, max_attempts: int) -> int:
        t = now()
        host = socket.gethostname()
        # A range of jobs_status_created: only the running jobs are read, never the history.
        doomed = [
            r["id"]
            for r in conn.execute(
                "SELECT id, worker_id, lease_until FROM jobs WHERE status = 'running'"
            )
            if r["worker_id"] is None
            or r["lease_until"] is None
            or r["lease_until"] < t
            or holder_is_dead(r["worker_id"], host)
        ]
        changed = 0
        for chunk in chunks(doomed):
            these = f"status = 'running' AND id IN ({','.join('?' * len(chunk))})"
            changed += conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, lease_until = NULL "
                f"WHERE {these} AND cancel_requested = 1",
                (t, *chunk),
            ).rowcount
            changed += conn.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, lease_until = NULL, "
                "error_type = 'interrupted', "
                "error_message = 'bildwerk stopped while running this job ' || attempts || "
                "' time(s); it is not retried again' "
                f"WHERE {these} AND attempts >= ?",
                (t, *chunk, max_attempts),
            ).rowcount
            changed += conn.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL, worker_id = NULL, "
                f"lease_until = NULL WHERE {these}",
                tuple(chunk),
            ).rowcount
        return changed

    # -- ending a run

    def requeue(self, job_id: str, *, worker_id: str | None = None) -> JobRow:
        """Put a running job back at its place in the queue (a graceful shutdown stopped
        it, not the job's fault: the interrupted run does not count as an attempt).
        ``worker_id``: only if it still runs under that worker (else JobStateError)."""
        with self.transaction() as conn:
            status = self._status_for_update(conn, job_id, "requeue", worker_id)
            if status != "running":
                raise JobStateError(job_id, status, "requeue")
            conn.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL, worker_id = NULL, "
                "lease_until = NULL, attempts = max(attempts - 1, 0) WHERE id = ?",
                (job_id,),
            )
            return self._get(conn, job_id)  # type: ignore[return-value]

    def _status_for_update(
        self,
        conn: sqlite3.Connection,
        job_id: str,
        action: str = "",
        worker_id: str | None = None,
    ) -> str:
        """The job's status, read under the write lock. With ``worker_id``: raises
        JobStateError unless the job is running under that worker, so a worker whose
        lease was lost can never end or re-queue someone else's run."""
        row = conn.execute(
            "SELECT status, worker_id FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        status = str(row["status"])
        if worker_id is not None and (status != "running" or row["worker_id"] != worker_id):
            holder = row["worker_id"] if status == "running" else None
            detail = (
                f"worker {worker_id!r} no longer holds it"
                + (f"; worker {holder!r} does" if holder else "")
            )
            raise JobStateError(job_id, status, action, detail)
        return status

    def finish(
        self,
        job_id: str,
        results: Sequence[tuple[bytes, int]],
        record: dict[str, Any],
        *,
        worker_id: str | None = None,
    ) -> JobRow:
        """A running job succeeded: store its PNGs (bytes, seed) and the engine's record.

        Raises JobStateError unless the job is running (a cancelled or recovered job's
        late results are refused; their files are left for gc()), and with ``worker_id``
        unless it is running under that worker.
        """
        record_json = json.dumps(record, ensure_ascii=False)
        staged = [
            (self._stage(png, f"result {i}"), seed) for i, (png, seed) in enumerate(results)
        ]
        with self.transaction() as conn:
            status = self._status_for_update(conn, job_id, "finish", worker_id)
            if status != "running":
                raise JobStateError(job_id, status, "finish")
            for image, _ in staged:
                self._ensure_image(conn, *image)
            conn.executemany(
                "INSERT INTO job_results (job_id, idx, sha256, seed) VALUES (?, ?, ?, ?)",
                [(job_id, i, image[0], seed) for i, (image, seed) in enumerate(staged)],
            )
            conn.execute(
                "UPDATE jobs SET status = 'succeeded', finished_at = ?, record_json = ?, "
                "error_type = NULL, error_message = NULL, lease_until = NULL WHERE id = ?",
                (now(), record_json, job_id),
            )
            final = record.get("request") if isinstance(record, dict) else None
            if isinstance(final, dict) and isinstance(final.get("prompt_record"), dict):
                # The prompt pipeline ran in the worker: search and export see the prompt the
                # model got, the user's own words and their language.
                cols = request_columns(final)
                conn.execute(
                    "UPDATE jobs SET prompt = ?, original_prompt = ?, language = ?, search_text = ? "
                    "WHERE id = ?",
                    (cols["prompt"], cols["original_prompt"], cols["language"], cols["search_text"],
                     job_id),
                )
            return self._get(conn, job_id)  # type: ignore[return-value]

    def fail(
        self, job_id: str, error_type: str, message: str, *, worker_id: str | None = None
    ) -> JobRow:
        """A queued or running job failed; ``error_type`` is e.g. an error's ``code``.
        ``worker_id``: only if it runs under that worker (else JobStateError)."""
        return self._end(
            job_id, "failed", "fail", ("queued", "running"), worker_id, error_type, message
        )

    def mark_cancelled(self, job_id: str, *, worker_id: str | None = None) -> JobRow:
        """The worker stopped a job after a cancel request (or before starting it).
        ``worker_id``: only if it runs under that worker (else JobStateError)."""
        return self._end(job_id, "cancelled", "mark cancelled", ("queued", "running"), worker_id)

    def _end(
        self,
        job_id: str,
        status: str,
        action: str,
        allowed: tuple[str, ...],
        worker_id: str | None,
        error_type: str | None = None,
        message: str | None = None,
    ) -> JobRow:
        with self.transaction() as conn:
            current = self._status_for_update(conn, job_id, action, worker_id)
            if current not in allowed:
                raise JobStateError(job_id, current, action)
            conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error_type = ?, error_message = ?, "
                "lease_until = NULL WHERE id = ?",
                (status, now(), error_type, message, job_id),
            )
            return self._get(conn, job_id)  # type: ignore[return-value]
    def cancel(self, job_id: str) -> str | None:
        """Cancel a job: returns "cancelled" (it was queued), "cancelling" (it is running:
        the worker is asked to stop) or None (already finished). Unknown id: JobNotFoundError.
        """
        with self.transaction() as conn:
            status = self._status_for_update(conn, job_id)
            if status == "queued":
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?",
                    (now(), job_id),
                )
                return "cancelled"
            if status == "running":
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
                return "cancelling"
            return None

    def is_cancel_requested(self, job_id: str) -> bool:
        """For the worker between steps. True also when the job is already cancelled or
        no longer exists: either way there is nothing left to run it for."""
        row = self._conn().execute(
            "SELECT cancel_requested, status FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return row is None or bool(row["cancel_requested"]) or row["status"] == "cancelled"

    def delete(self, job_id: str) -> bool:
        """Delete a job and its links, then the image files no other job uses.

        False when there is no such job; JobStateError for a running job (cancel it
        first, so the worker's finish() does not meet a missing row).
        """
        with self.transaction() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            if row["status"] == "running":
                raise JobStateError(job_id, "running", "delete")
            shas = [
                r[0]
                for r in conn.execute(
                    "SELECT sha256 FROM job_inputs WHERE job_id = ? "
                    "UNION SELECT sha256 FROM job_results WHERE job_id = ?",
                    (job_id, job_id),
                )
            ]
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        # A second transaction: files are unlinked only once the deletion is committed,
        # so a failed commit can never leave a surviving job without its images.
        self._collect(shas)
        return True
