"""The job store's errors; each carries the ``code`` the REST layer answers with."""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bildwerk.core.errors import BildwerkError


class StoreError(BildwerkError):
    """The job store could not do what was asked."""

    code = "store_error"


class QueueFull(StoreError):
    """Too many jobs are waiting or running; the caller should retry later (HTTP 429/503)."""

    code = "queue_full"

    def __init__(self, depth: int, limit: int) -> None:
        super().__init__(
            f"the queue is full: {depth} job(s) waiting or running, limit {limit}; "
            "try again when some have finished"
        )
        self.depth = depth
        self.limit = limit


class JobNotFoundError(StoreError):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        shown = job_id if len(job_id) <= 80 else job_id[:80] + "..."  # echo a bounded part
        super().__init__(f"no job with id {shown!r}")
        self.job_id = job_id


class AmbiguousJobIdError(StoreError):
    """A shortened job id that more than one job starts with."""

    code = "ambiguous_job_id"

    def __init__(self, prefix: str, matches: list[str]) -> None:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        super().__init__(f"job id {prefix[:80]!r} is the start of several jobs ({shown}); "
                         "give more of it, or the whole id")
        self.job_id = prefix


class JobExistsError(StoreError):
    code = "job_exists"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"a job with id {job_id!r} already exists")
        self.job_id = job_id


class JobStateError(StoreError):
    """A transition the job's current status does not allow (finishing a cancelled job...),
    or one asked for by a worker that no longer holds the job (``detail`` says so)."""

    code = "job_state"

    def __init__(self, job_id: str, status: str, action: str, detail: str | None = None) -> None:
        message = f"cannot {action} job {job_id!r}: it is {status}"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.job_id = job_id
        self.status = status
        self.action = action
        self.detail = detail


class PoolNotFoundError(StoreError):
    code = "pool_not_found"

    def __init__(self, pool_id: str) -> None:
        shown = pool_id if len(pool_id) <= 80 else pool_id[:80] + "..."  # echo a bounded part
        super().__init__(f"no pool with id {shown!r}")
        self.pool_id = pool_id


class PoolStateError(StoreError):
    """What was asked of a pool does not fit its status (starting a running pool, editing
    the plan of a running one); the message names the status and what is possible."""

    code = "pool_state"

    def __init__(self, pool_id: str, status: str, action: str, allowed: tuple[str, ...] = ()) -> None:
        hint = f"; only a pool that is {' or '.join(allowed)} can" if allowed else ""
        super().__init__(f"cannot {action} pool {pool_id!r}: it is {status}{hint}")
        self.pool_id = pool_id
        self.status = status
        self.action = action


class ImageNotFoundError(StoreError):
    code = "image_not_found"

    def __init__(self, sha256: str) -> None:
        super().__init__(f"no stored image with sha256 {sha256}")
        self.sha256 = sha256


class CorruptImageError(StoreError):
    """A stored file is missing or its bytes no longer match its hash (disk damage)."""

    code = "corrupt_image"

    def __init__(self, sha256: str, path: Path, reason: str) -> None:
        super().__init__(f"stored image {sha256} is damaged ({reason}): {path}")
        self.sha256 = sha256
        self.path = path


class ExportError(StoreError):
    code = "export_failed"


class StoreUnwritableError(StoreError):
    """The store's file system takes no writes now (mounted read-only); reads still work.
    Nothing was changed; the caller may retry once the store is writable again."""

    code = "store_unavailable"
    retry_after = 30


class StoreFullError(StoreUnwritableError):
    """The store's disk (or the user's quota) is full: nothing was written."""

    code = "insufficient_storage"


# errno values that mean "the store cannot take writes now", not a bug or a bad request.
_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)
_READ_ONLY_ERRNOS = frozenset({errno.EROFS})


def unwritable(exc: BaseException) -> StoreUnwritableError | None:
    """The typed error for a write that failed because the store is full or read-only (an
    OSError's errno, SQLite's SQLITE_FULL or SQLITE_READONLY*), else None. The message names
    no server path: it goes to clients; the original stays chained for the log."""
    if isinstance(exc, StoreUnwritableError):
        return exc
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return StoreFullError(f"the store's disk is full ({os.strerror(exc.errno)})")
        if exc.errno in _READ_ONLY_ERRNOS:
            return StoreUnwritableError(f"the store is read-only ({os.strerror(exc.errno)})")
    if isinstance(exc, sqlite3.Error):
        name = str(getattr(exc, "sqlite_errorname", ""))
        if name == "SQLITE_FULL":
            return StoreFullError("the store's disk is full (the database cannot grow)")
        if name.startswith("SQLITE_READONLY"):
            return StoreUnwritableError("the store is read-only (the database takes no writes)")
    return None


@contextmanager
def writes() -> Iterator[None]:
    """Around a store write: a full or read-only file system becomes its typed error."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        typed = unwritable(exc)
        if typed is None or typed is exc:
            raise
        raise typed from exc
