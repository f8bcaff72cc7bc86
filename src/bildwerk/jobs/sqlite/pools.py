"""Image pools in the store: one row per pool (its plan, status and error), and the link from
each job to the pool and plan item it makes (``jobs.pool_id``, ``jobs.pool_item``).

A pool's images are ordinary jobs, so they are queued, run, searched and exported like any
other; these methods are what the pool service needs on top: a pool's rows, its status
changes (each one transaction that checks the status it starts from under the write lock,
so two clients pausing and resuming at once cannot both win), and its jobs by plan item
(what a resumed pool looks up before it submits anything).

Statuses::

    draft     -> running             start
    running   -> paused, cancelled   pause, cancel
    running   -> complete | short | failed   the run ended by itself
    paused, short, failed -> running  resume
    draft, paused, short, failed -> cancelled   cancel
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bildwerk.core.errors import InvalidRequestError
from bildwerk.jobs.sqlite.errors import PoolNotFoundError, PoolStateError
from bildwerk.jobs.sqlite.rows import chunks, now
from bildwerk.jobs.sqlite.search import MAX_OFFSET, Search

POOL_STATUSES = ("draft", "running", "paused", "cancelled", "complete", "short", "failed")
# Pool ids reach the file system (the pool's folder under the store): filename-safe only.
POOL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

_POOL_COLUMNS = "id, name, topic, status, plan_json, created_at, updated_at, error"
_KEEP: Any = object()


@dataclass(frozen=True)
class PoolRow:
    id: str
    name: str
    topic: str
    status: str
    plan: dict[str, Any]
    created_at: float
    updated_at: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pool(r: Any) -> PoolRow:
    return PoolRow(id=r["id"], name=r["name"], topic=r["topic"], status=r["status"],
                   plan=json.loads(r["plan_json"]), created_at=r["created_at"],
                   updated_at=r["updated_at"], error=r["error"])


def _check_status(status: str | None) -> None:
    if status is not None and status not in POOL_STATUSES:
        raise InvalidRequestError(f"unknown pool status {status!r}; expected {', '.join(POOL_STATUSES)}")


class Pools(Search):
    def create_pool(self, *, plan: dict[str, Any], name: str, topic: str, pool_id: str | None = None) -> PoolRow:
        """A new pool in status ``draft``; ``plan`` is ``PoolPlan.dump()``."""
        if pool_id is None:
            pool_id = uuid.uuid4().hex
        elif not isinstance(pool_id, str) or not POOL_ID_RE.fullmatch(pool_id):
            raise InvalidRequestError(f"invalid pool id {pool_id!r}: 1-64 letters, digits, '-' or '_'")
        plan_json = json.dumps(plan, ensure_ascii=False)
        with self.transaction() as conn:
            t = now()
            conn.execute(
                f"INSERT INTO pools ({_POOL_COLUMNS}) VALUES (?, ?, ?, 'draft', ?, ?, ?, NULL)",
                (pool_id, name, topic, plan_json, t, t),
            )
            return self._get_pool(conn, pool_id)  # type: ignore[return-value]

    def get_pool(self, pool_id: str) -> PoolRow | None:
        with self.transaction(write=False) as conn:
            return self._get_pool(conn, pool_id)

    @staticmethod
    def _get_pool(conn: Any, pool_id: str) -> PoolRow | None:
        r = conn.execute(f"SELECT {_POOL_COLUMNS} FROM pools WHERE id = ?", (pool_id,)).fetchone()
        return None if r is None else _pool(r)

    def list_pools(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> list[PoolRow]:
        """Pools newest first."""
        _check_status(status)
        if limit < 0 or not 0 <= offset <= MAX_OFFSET:
            raise InvalidRequestError(f"limit must be >= 0 and offset between 0 and {MAX_OFFSET}")
        where, params = (" WHERE status = ?", [status]) if status is not None else ("", [])
        with self.transaction(write=False) as conn:
            cur = conn.execute(
                f"SELECT {_POOL_COLUMNS} FROM pools{where} ORDER BY created_at DESC, rowid DESC "
                "LIMIT ? OFFSET ?", (*params, limit, offset))
            return [_pool(r) for r in cur]

    def count_pools(self, status: str | None = None) -> int:
        _check_status(status)
        where, params = (" WHERE status = ?", [status]) if status is not None else ("", [])
        return int(self._conn().execute(f"SELECT count(*) FROM pools{where}", params).fetchone()[0])

    def update_pool(self, pool_id: str, *, action: str, allowed: Sequence[str] | None = None,
                    status: str | None = None, plan: dict[str, Any] | None = None,
                    name: str | None = None, topic: str | None = None, error: Any = _KEEP) -> PoolRow:
        """Change a pool in one transaction: only from the ``allowed`` statuses (else
        PoolStateError naming the status it is in); PoolNotFoundError for an unknown id.
        ``error``: a text, None to clear it, or left as it is when not given."""
        _check_status(status)
        with self.transaction() as conn:
            row = self._get_pool(conn, pool_id)
            if row is None:
                raise PoolNotFoundError(pool_id)
            if allowed is not None and row.status not in allowed:
                raise PoolStateError(pool_id, row.status, action, tuple(allowed))
            sets, params = ["updated_at = ?"], [now()]
            for column, value in (("status", status), ("name", name), ("topic", topic)):
                if value is not None:
                    sets.append(f"{column} = ?")
                    params.append(value)
            if plan is not None:
                sets.append("plan_json = ?")
                params.append(json.dumps(plan, ensure_ascii=False))
            if error is not _KEEP:
                sets.append("error = ?")
                params.append(error)
            conn.execute(f"UPDATE pools SET {', '.join(sets)} WHERE id = ?", (*params, pool_id))
            return self._get_pool(conn, pool_id)  # type: ignore[return-value]

    # -- a pool's jobs

    def pool_item_jobs(self, pool_id: str, item_ids: Iterable[str] | None = None) -> dict[str, list[tuple[str, str]]]:
        """Per plan item: its jobs as (job id, status), oldest first (all of the pool's items
        when ``item_ids`` is None)."""
        out: dict[str, list[tuple[str, str]]] = {}
        with self.transaction(write=False) as conn:
            if item_ids is None:
                cursors = [conn.execute(
                    "SELECT id, pool_item, status FROM jobs WHERE pool_id = ? ORDER BY created_at, rowid",
                    (pool_id,))]
            else:
                ids = list(dict.fromkeys(item_ids))
                cursors = [conn.execute(
                    "SELECT id, pool_item, status FROM jobs WHERE pool_id = ? AND pool_item IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY created_at, rowid", (pool_id, *chunk))
                    for chunk in chunks(ids)]
            for cur in cursors:
                for r in cur:
                    out.setdefault(r["pool_item"], []).append((r["id"], r["status"]))
        return out

    def pool_active_jobs(self, pool_id: str) -> list[str]:
        """The pool's jobs that are queued or running, oldest first."""
        cur = self._conn().execute(
            "SELECT id FROM jobs WHERE pool_id = ? AND status IN ('queued', 'running') "
            "ORDER BY created_at, rowid", (pool_id,))
        return [r[0] for r in cur]

    def pool_job_counts(self, pool_id: str) -> dict[str, int]:
        """How many of the pool's jobs are in each status."""
        cur = self._conn().execute(
            "SELECT status, count(*) FROM jobs WHERE pool_id = ? GROUP BY status", (pool_id,))
        return {r[0]: int(r[1]) for r in cur}

    def job_statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        """job id -> status for those that exist (a deleted job is left out)."""
        out: dict[str, str] = {}
        conn = self._conn()
        for chunk in chunks(list(job_ids)):
            for r in conn.execute(
                    f"SELECT id, status FROM jobs WHERE id IN ({','.join('?' * len(chunk))})", tuple(chunk)):
                out[r[0]] = r[1]
        return out
