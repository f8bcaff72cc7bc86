"""The job state machine: creating, claiming, ending, cancelling, re-queueing and
recovering jobs, and deleting ended ones. Each transition is one ``BEGIN IMMEDIATE``
transaction that first reads the job's status under the write lock."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

from bildwerk.errors import InvalidRequestError
from bildwerk.jobs.sqlite.blobs import Blobs
from bildwerk.jobs.sqlite.errors import (
    JobExistsError,
    JobNotFoundError,
    JobStateError,
    QueueFull,
)
from bildwerk.jobs.sqlite.rows import APIS, ENGINES, INPUT_ROLES, JobRow, now, request_columns
from bildwerk.jobs.sqlite.search import Search

# A job whose process died this many times while running it is failed, not retried.
DEFAULT_MAX_ATTEMPTS = 3

# Job ids end up in export file names, so only filename-safe characters.
_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


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
    ) -> JobRow:
        """Queue a job. ``request`` is ``GenerationRequest.record()``; ``inputs`` maps
        "image"/"mask" to PNG bytes. Raises QueueFull when ``max_queued`` jobs are
        already queued or running, JobExistsError for a reused ``job_id``."""
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
                    "original_prompt, language, seed, search_text, request_json, options_json) "
                    "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if "jobs.id" in str(exc):
                    raise JobExistsError(job_id) from exc
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

    def claim_next(self) -> JobRow | None:
        """Atomically move the oldest queued job to running and return it (None: idle)."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT id FROM jobs WHERE status = 'queued' "
                "ORDER BY created_at, rowid LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 "
                "WHERE id = ?",
                (now(), row["id"]),
            )
            return self._get(conn, row["id"])

    def recover(self, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
        """At startup: jobs left running by a dead process; returns how many were changed.

        They go back to the queue, except those whose cancellation was requested
        (cancelled) and those that already ran ``max_attempts`` times (failed with
        error_type "interrupted": a job that kills the process must not loop forever).
        Call only while no other worker process uses this store.
        """
        t = now()
        with self.transaction() as conn:
            cancelled = conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? "
                "WHERE status = 'running' AND cancel_requested = 1",
                (t,),
            ).rowcount
            failed = conn.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, error_type = 'interrupted', "
                "error_message = 'bildwerk stopped while running this job ' || attempts || "
                "' time(s); it is not retried again' "
                "WHERE status = 'running' AND attempts >= ?",
                (t, max_attempts),
            ).rowcount
            requeued = conn.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL WHERE status = 'running'"
            ).rowcount
        return cancelled + failed + requeued

    def requeue(self, job_id: str) -> JobRow:
        """Put a running job back at its place in the queue (a graceful shutdown stopped
        it, not the job's fault: the interrupted run does not count as an attempt)."""
        with self.transaction() as conn:
            status = self._status_for_update(conn, job_id)
            if status != "running":
                raise JobStateError(job_id, status, "requeue")
            conn.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL, "
                "attempts = max(attempts - 1, 0) WHERE id = ?",
                (job_id,),
            )
            return self._get(conn, job_id)  # type: ignore[return-value]

    def _status_for_update(self, conn: sqlite3.Connection, job_id: str) -> str:
        row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        return str(row["status"])

    def finish(
        self, job_id: str, results: Sequence[tuple[bytes, int]], record: dict[str, Any]
    ) -> JobRow:
        """A running job succeeded: store its PNGs (bytes, seed) and the engine's record.

        Raises JobStateError unless the job is running (a cancelled or recovered job's
        late results are refused; their files are left for gc()).
        """
        record_json = json.dumps(record, ensure_ascii=False)
        staged = [
            (self._stage(png, f"result {i}"), seed) for i, (png, seed) in enumerate(results)
        ]
        with self.transaction() as conn:
            status = self._status_for_update(conn, job_id)
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
                "error_type = NULL, error_message = NULL WHERE id = ?",
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

    def fail(self, job_id: str, error_type: str, message: str) -> JobRow:
        """A queued or running job failed; ``error_type`` is e.g. an error's ``code``."""
        return self._end(job_id, "failed", "fail", ("queued", "running"), error_type, message)

    def mark_cancelled(self, job_id: str) -> JobRow:
        """The worker stopped a job after a cancel request (or before starting it)."""
        return self._end(job_id, "cancelled", "mark cancelled", ("queued", "running"))

    def _end(
        self,
        job_id: str,
        status: str,
        action: str,
        allowed: tuple[str, ...],
        error_type: str | None = None,
        message: str | None = None,
    ) -> JobRow:
        with self.transaction() as conn:
            current = self._status_for_update(conn, job_id)
            if current not in allowed:
                raise JobStateError(job_id, current, action)
            conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, error_type = ?, error_message = ? "
                "WHERE id = ?",
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
