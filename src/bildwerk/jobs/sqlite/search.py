"""Reading jobs: rows with their inputs and results, the shared WHERE builder, listing,
counting and queue positions."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from bildwerk.core.errors import InvalidRequestError
from bildwerk.jobs.sqlite.db import Database
from bildwerk.jobs.sqlite.rows import (
    ACTIVE_STATUSES,
    JOB_COLUMNS,
    STATUSES,
    JobResult,
    JobRow,
    chunks,
    fold,
    json_or_none,
)

MAX_SEARCH_WORDS = 16  # one LIKE per word: a bound keeps a search from becoming a scan per word
MAX_OFFSET = 2**31  # far beyond any history, well inside SQLite's integers
MAX_JOB_IDS = 1000  # one SQL parameter each


def _like_escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Search(Database):
    def get(self, job_id: str) -> JobRow | None:
        with self.transaction(write=False) as conn:
            return self._get(conn, job_id)

    def _get(self, conn: sqlite3.Connection, job_id: str) -> JobRow | None:
        rows = self._rows(
            conn, conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        )
        return rows[0] if rows else None

    def resolve_ids(self, ids: Sequence[str]) -> list[str]:
        """Full job ids for ids or unique starts of ids, as a person copies them from a
        listing (JobNotFoundError for one that matches nothing, AmbiguousJobIdError for one
        that starts several)."""
        with self.transaction(write=False) as conn:
            return self._resolve_ids(conn, ids)

    def _resolve_ids(self, conn: sqlite3.Connection, ids: Sequence[str]) -> list[str]:
        from bildwerk.jobs.sqlite.errors import AmbiguousJobIdError, JobNotFoundError

        exact: set[str] = set()
        for chunk in chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            exact |= {r[0] for r in conn.execute(f"SELECT id FROM jobs WHERE id IN ({marks})", chunk)}
        out = []
        for job_id in ids:
            if job_id in exact:
                out.append(job_id)
                continue
            # substr, not LIKE: case-sensitive, and no wildcard characters to escape.
            hits = [r[0] for r in conn.execute(
                "SELECT id FROM jobs WHERE length(?) > 0 AND substr(id, 1, length(?)) = ? ORDER BY id LIMIT 6",
                (job_id, job_id, job_id))]
            if not hits:
                raise JobNotFoundError(job_id)
            if len(hits) > 1:
                raise AmbiguousJobIdError(job_id, hits)
            out.append(hits[0])
        return out

    def _rows(self, conn: sqlite3.Connection, cursor: Iterable[sqlite3.Row]) -> list[JobRow]:
        """Job rows with their inputs and results (two queries per 500 jobs, not per job)."""
        raw = [dict(r) for r in cursor]
        ids = [r["id"] for r in raw]
        inputs: dict[str, dict[str, str]] = {i: {} for i in ids}
        results: dict[str, list[JobResult]] = {i: [] for i in ids}
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            for r in conn.execute(
                f"SELECT job_id, role, sha256 FROM job_inputs WHERE job_id IN ({marks})",
                tuple(chunk),
            ):
                inputs[r["job_id"]][r["role"]] = r["sha256"]
            for r in conn.execute(
                "SELECT j.job_id, j.idx, j.sha256, j.seed, i.width, i.height, i.bytes "
                "FROM job_results j JOIN images i ON i.sha256 = j.sha256 "
                f"WHERE j.job_id IN ({marks}) ORDER BY j.job_id, j.idx",
                tuple(chunk),
            ):
                results[r["job_id"]].append(
                    JobResult(r["idx"], r["sha256"], r["seed"], r["width"], r["height"], r["bytes"])
                )
        out = []
        for r in raw:
            out.append(
                JobRow(
                    id=r["id"],
                    created_at=r["created_at"],
                    started_at=r["started_at"],
                    finished_at=r["finished_at"],
                    status=r["status"],
                    api=r["api"],
                    engine=r["engine"],
                    model=r["model"],
                    mode=r["mode"],
                    prompt=r["prompt"],
                    original_prompt=r["original_prompt"],
                    language=r["language"],
                    seed=r["seed"],
                    request=json.loads(r["request_json"]),
                    options=json.loads(r["options_json"]),
                    record=json_or_none(r["record_json"]),
                    error_type=r["error_type"],
                    error_message=r["error_message"],
                    cancel_requested=bool(r["cancel_requested"]),
                    attempts=r["attempts"],
                    inputs=inputs[r["id"]],
                    results=results[r["id"]],
                    worker_id=r["worker_id"],
                    lease_until=r["lease_until"],
                    pool_id=r["pool_id"],
                    pool_item=r["pool_item"],
                )
            )
        return out

    @staticmethod
    def _where(
        *,
        status: str | Iterable[str] | None = None,
        text: str | None = None,
        model: str | None = None,
        api: str | None = None,
        mode: str | None = None,
        since: float | None = None,
        until: float | None = None,
        job_ids: Sequence[str] | None = None,
        pool_id: str | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            unknown = [s for s in wanted if s not in STATUSES]
            if unknown or not wanted:
                raise InvalidRequestError(
                    f"unknown status {unknown or wanted!r}; expected {', '.join(STATUSES)}"
                )
            clauses.append(f"status IN ({','.join('?' * len(wanted))})")
            params += wanted
        if text:
            # Every word must occur (in the model's prompt or the user's original text).
            terms = fold(text).split()
            if len(terms) > MAX_SEARCH_WORDS:
                raise InvalidRequestError(
                    f"a search may have at most {MAX_SEARCH_WORDS} words, got {len(terms)}"
                )
            for term in terms:
                clauses.append("search_text LIKE ? ESCAPE '\\'")
                params.append(f"%{_like_escape(term)}%")
        for column, value in (("model", model), ("api", api), ("mode", mode), ("pool_id", pool_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        for name, value, op in (("since", since, ">="), ("until", until, "<")):
            if value is None:
                continue
            if not math.isfinite(float(value)):
                raise InvalidRequestError(f"{name} must be a finite time (epoch seconds), got {value}")
            clauses.append(f"created_at {op} ?")
            params.append(float(value))
        if job_ids is not None:
            if len(job_ids) > MAX_JOB_IDS:
                raise InvalidRequestError(f"at most {MAX_JOB_IDS} job ids at once, got {len(job_ids)}")
            clauses.append(f"id IN ({','.join('?' * len(job_ids))})" if job_ids else "0")
            params += list(job_ids)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list_jobs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        text: str | None = None,
        model: str | None = None,
        api: str | None = None,
        mode: str | None = None,
        since: float | None = None,
        until: float | None = None,
        pool_id: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[JobRow]:
        """Jobs newest first. ``text``: every word must occur in the prompt or the
        original prompt (case-insensitive, Unicode-aware); ``since``/``until``: epoch
        seconds on created_at (until exclusive); ``pool_id``: the jobs of one image pool;
        ``limit=None``: no limit."""
        if limit is not None and limit < 0:
            raise InvalidRequestError(f"limit must be >= 0, got {limit}")
        if not 0 <= offset <= MAX_OFFSET:
            raise InvalidRequestError(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")
        where, params = self._where(
            status=status, text=text, model=model, api=api, mode=mode, since=since, until=until,
            pool_id=pool_id,
        )
        sql = f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY created_at DESC, rowid DESC"
        sql += " LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        with self.transaction(write=False) as conn:
            return self._rows(conn, conn.execute(sql, params))

    def count(self, status: str | Iterable[str] | None = None, *, pool_id: str | None = None,
              text: str | None = None, model: str | None = None, api: str | None = None,
              mode: str | None = None, since: float | None = None, until: float | None = None) -> int:
        """How many jobs ``list_jobs`` with the same filters finds, without a limit."""
        where, params = self._where(status=status, pool_id=pool_id, text=text, model=model, api=api,
                                    mode=mode, since=since, until=until)
        return int(self._conn().execute(f"SELECT count(*) FROM jobs{where}", params).fetchone()[0])

    def queue_depth(self) -> int:
        """Jobs queued or running."""
        return self.count(ACTIVE_STATUSES)

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next queued job to run, 2 for the one after...; None unless queued."""
        with self.transaction(write=False) as conn:
            row = conn.execute(
                "SELECT created_at, rowid FROM jobs WHERE id = ? AND status = 'queued'", (job_id,)
            ).fetchone()
            if row is None:
                return None
            (ahead,) = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND "
                "(created_at < ? OR (created_at = ? AND rowid < ?))",
                (row[0], row[0], row[1]),
            ).fetchone()
        return int(ahead) + 1
