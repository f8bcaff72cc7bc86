"""The SQLite side of the store: one connection per thread, ``transaction()``, the
schema migrations on open, and closing.

Every multi-statement write is one ``BEGIN IMMEDIATE`` transaction: the write lock is
taken up front, so two writers queue on ``busy_timeout`` instead of failing when a read
transaction tries to upgrade. WAL lets readers run beside the one writer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from bildwerk.jobs.migrations import MIGRATIONS, migrate
from bildwerk.jobs.sqlite.errors import StoreError, writes

BUSY_TIMEOUT_MS = 5000
SYNCHRONOUS_MODES = ("NORMAL", "FULL")


class Database:
    """Thread-local connections to ``db_path`` (opened by :meth:`_open_db`)."""

    db_path: Path

    def _open_db(
        self,
        db_path: str | os.PathLike[str],
        synchronous: Literal["NORMAL", "FULL"],
        prepare: list[Path] | None = None,
    ) -> None:
        """Open (creating or migrating) the database; ``prepare``: folders to create first.

        Closes everything again when any step fails, so a failed constructor leaks nothing.
        """
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.db_path = Path(db_path)
        self._synchronous = synchronous
        self._local = threading.local()
        self._conns: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        for folder in prepare or []:
            folder.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                # Network file systems cannot do WAL; better to say so than lose durability.
                raise StoreError(f"{self.db_path}: the file system does not support WAL ({mode})")
            migrate(conn, MIGRATIONS)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (Python's implicit
        # transactions would start deferred ones). check_same_thread=False only so
        # close() can close other threads' connections; each is used by one thread.
        conn = sqlite3.connect(
            self.db_path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            if self._closed:
                raise StoreError("the job store is closed")
            return conn
        with self._conns_lock:
            if self._closed:
                raise StoreError("the job store is closed")
            # Threads of a pool come and go: close connections whose thread has ended.
            alive = []
            for ref, other in self._conns:
                thread = ref()
                if thread is not None and thread.is_alive():
                    alive.append((ref, other))
                else:
                    other.close()
            conn = self._connect()
            alive.append((weakref.ref(threading.current_thread()), conn))
            self._conns = alive
        self._local.conn = conn
        self._local.depth = 0
        return conn

    def close(self) -> None:
        """Close every thread's connection; the last close checkpoints the WAL."""
        with self._conns_lock:
            self._closed = True
            for _, conn in self._conns:
                conn.close()
            self._conns = []

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction on this thread's connection; nested calls join the outer one.

        ``write=True`` (the default) starts ``BEGIN IMMEDIATE``: the write lock is taken
        at once (waiting up to busy_timeout), so the transaction cannot fail later when
        it first writes. ``write=False`` gives a consistent read snapshot. A full or
        read-only file system raises StoreFullError / StoreUnwritableError, rolled back.
        """
        conn = self._conn()
        depth: int = self._local.depth
        if depth:
            if write and not self._local.write:
                raise RuntimeError("a write transaction cannot be nested in a read transaction")
            self._local.depth = depth + 1
            try:
                yield conn
            finally:
                self._local.depth = depth
            return
        with writes():  # a full disk is StoreFullError, whichever statement met it
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            self._local.depth = 1
            self._local.write = write
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back by itself (SQLITE_FULL)
                    conn.execute("ROLLBACK")
                raise
            finally:
                self._local.depth = 0

    def _database_problems(self) -> list[str]:
        """SQLite's integrity and foreign-key checks, as lines for ``verify()``."""
        conn = self._conn()
        problems: list[str] = []
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems += [f"database: {line}" for line in integrity]
        for r in conn.execute("PRAGMA foreign_key_check"):
            problems.append(f"database: broken foreign key {tuple(r)}")
        return problems
