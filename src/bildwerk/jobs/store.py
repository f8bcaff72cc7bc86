"""The persistent job store: a SQLite database plus content-addressed PNG files.

Nothing accepted may be lost, so the rules are:

* Image files are written first (temp file, fsync, atomic ``os.replace``, directory
  fsync) and only then referenced by a row, inside one transaction that also checks the
  file is still there. A crash in between leaves an unreferenced file, which ``gc()``
  removes; a row never points at a file that was not complete on disk.
* Files are only unlinked inside a write transaction that has just seen them
  unreferenced. Writers hold the same lock while checking their files exist, so a
  concurrent ``gc()``/``delete()`` can never remove a file a new job is about to use.
* Every multi-statement write is one ``BEGIN IMMEDIATE`` transaction: the write lock
  is taken up front, so two writers queue on ``busy_timeout`` instead of failing when a
  read transaction tries to upgrade.
* A full disk or quota (ENOSPC, EDQUOT, SQLITE_FULL) raises :class:`StoreFullError`, a
  read-only one :class:`StoreUnwritableError`; the write is rolled back, and the store
  works again as soon as space returns. ``collect()`` removes what killed writers left.

Durability: WAL with ``synchronous=NORMAL``. A commit is written to the WAL before
``COMMIT`` returns, so a killed process (SIGKILL, OOM, segfault) loses nothing; only a
power cut or kernel crash can roll back the last commits since the WAL was last
synced, and never corrupts the database. ``Store(..., synchronous="FULL")`` fsyncs
every commit for hosts where that matters.

Transitions (anything else raises :class:`JobStateError`)::

    queued  -> running    claim_next()
    queued  -> cancelled  cancel(), mark_cancelled()
    queued  -> failed     fail()            (e.g. the model vanished before it ran)
    running -> succeeded  finish()          (also when a cancel was requested too late)
    running -> failed     fail()
    running -> cancelled  mark_cancelled()
    running -> queued     reclaim_expired(), recover()   (its worker died or its lease
                          ran out; cancelled instead if a cancel was requested, failed
                          "interrupted" after max_attempts runs)
    running -> queued     requeue()         (a graceful shutdown interrupted it)

Several worker processes may share one store: each claims with ``claim_next(worker_id)``
(an id from :func:`new_worker_id`), keeps its jobs' leases alive with
``renew_leases()``, and passes ``worker_id=`` to finish()/fail()/mark_cancelled()/
requeue(), which then refuse a job that has been taken back from it.

The code lives in :mod:`bildwerk.jobs.sqlite`, one module per concern: ``db``
(connections, transactions, migrations), ``blobs`` (image files), ``state`` (the
transitions above), ``leases`` (worker ids and liveness), ``search`` (reading and
listing), ``export``, ``pools`` (image pools and their jobs), ``errors`` and ``rows``. This module composes them and is the import every caller uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from bildwerk.jobs.sqlite.blobs import ORPHAN_GRACE_SECONDS, STALE_TEMP_SECONDS
from bildwerk.jobs.sqlite.db import BUSY_TIMEOUT_MS
from bildwerk.jobs.sqlite.errors import (
    CorruptImageError,
    ExportError,
    ImageNotFoundError,
    JobExistsError,
    JobNotFoundError,
    JobStateError,
    PoolNotFoundError,
    PoolStateError,
    QueueFull,
    StoreError,
    StoreFullError,
    StoreUnwritableError,
)
from bildwerk.jobs.sqlite.export import Export
from bildwerk.jobs.sqlite.leases import DEFAULT_LEASE_SECONDS, new_worker_id
from bildwerk.jobs.sqlite.pools import POOL_ID_RE, POOL_STATUSES, PoolRow, Pools
from bildwerk.jobs.sqlite.rows import (
    ACTIVE_STATUSES,
    APIS,
    ENGINES,
    FINISHED_STATUSES,
    INPUT_ROLES,
    STATUSES,
    JobResult,
    JobRow,
    StoredImage,
)
from bildwerk.jobs.sqlite.search import MAX_JOB_IDS, MAX_OFFSET, MAX_SEARCH_WORDS
from bildwerk.jobs.sqlite.state import ANY_MODEL, DEFAULT_MAX_ATTEMPTS, States

__all__ = [
    "ACTIVE_STATUSES",
    "ANY_MODEL",
    "APIS",
    "BUSY_TIMEOUT_MS",
    "DB_NAME",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_ATTEMPTS",
    "ENGINES",
    "FINISHED_STATUSES",
    "IMAGES_DIR",
    "INPUT_ROLES",
    "MAX_JOB_IDS",
    "MAX_OFFSET",
    "MAX_SEARCH_WORDS",
    "ORPHAN_GRACE_SECONDS",
    "POOL_ID_RE",
    "POOL_STATUSES",
    "STALE_TEMP_SECONDS",
    "STATUSES",
    "CorruptImageError",
    "ExportError",
    "ImageNotFoundError",
    "JobExistsError",
    "JobNotFoundError",
    "JobResult",
    "JobRow",
    "JobStateError",
    "PoolNotFoundError",
    "PoolRow",
    "PoolStateError",
    "QueueFull",
    "Store",
    "StoreError",
    "StoreFullError",
    "StoreUnwritableError",
    "StoredImage",
    "new_worker_id",
]

DB_NAME = "bildwerk.db"
IMAGES_DIR = "images"


class Store(States, Export, Pools):
    """Jobs, their inputs and results, in ``root/bildwerk.db`` and ``root/images/``.

    Thread-safe: each thread gets its own connection (WAL lets readers run beside the
    one writer), and several processes may share the folder. Several of them may work
    the queue too when every worker claims with a worker id (leases); a claim without
    one is taken back by any process's ``reclaim_expired()``/``recover()``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        self.root = Path(root)
        self.images_dir = self.root / IMAGES_DIR
        self._open_db(self.root / DB_NAME, synchronous, prepare=[self.images_dir])

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def verify(self, *, hashes: bool = True) -> list[str]:
        """Problems found: SQLite integrity, foreign keys, missing or damaged files."""
        return self._database_problems() + self._image_problems(hashes=hashes)
