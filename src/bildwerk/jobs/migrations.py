"""Numbered schema migrations for the job store, tracked in ``PRAGMA user_version``.

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``. A migration is
never edited once released; a schema change is a new script appended to the list.
Each script runs in one ``BEGIN IMMEDIATE`` transaction together with the version
bump, so a crash mid-migration leaves the database at the previous version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

# Version 1: jobs, content-addressed images and the links between them.
# api, engine and input roles are checked in Python rather than with CHECK constraints:
# SQLite cannot alter a CHECK without rebuilding the table, and new APIs will come.
_V1 = """
CREATE TABLE images (
    sha256     TEXT PRIMARY KEY CHECK (length(sha256) = 64),
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at REAL NOT NULL
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    api              TEXT NOT NULL,
    engine           TEXT NOT NULL,
    model            TEXT,
    mode             TEXT,
    prompt           TEXT NOT NULL DEFAULT '',
    original_prompt  TEXT,
    language         TEXT,
    seed             INTEGER,
    search_text      TEXT NOT NULL DEFAULT '',
    request_json     TEXT NOT NULL,
    options_json     TEXT NOT NULL DEFAULT '{}',
    record_json      TEXT,
    error_type       TEXT,
    error_message    TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    attempts         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_status_created ON jobs (status, created_at);
CREATE INDEX jobs_created ON jobs (created_at);
CREATE INDEX jobs_model ON jobs (model);

CREATE TABLE job_inputs (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    role   TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES images (sha256),
    PRIMARY KEY (job_id, role)
);
-- Foreign keys are checked from the parent side on delete: without these indexes every
-- deleted image row would scan the link tables.
CREATE INDEX job_inputs_sha256 ON job_inputs (sha256);

CREATE TABLE job_results (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx    INTEGER NOT NULL CHECK (idx >= 0),
    sha256 TEXT NOT NULL REFERENCES images (sha256),
    seed   INTEGER,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX job_results_sha256 ON job_results (sha256);
"""

# Version 2: worker leases, so several worker processes can share one store. A running
# job names the worker that claimed it and how long its claim holds; rows of version 1
# get NULLs (no lease), which reclaim_expired() takes back like a dead worker's.
# No new index: jobs_status_created (status, created_at) already gives claiming the head
# of the queue in index order and reclaiming a range over the running jobs only (the
# planner prefers it even to a partial covering index on running jobs); renewing goes by
# primary key. tests/jobs/test_leases.py checks those query plans.
_V2 = """
ALTER TABLE jobs ADD COLUMN worker_id TEXT;
ALTER TABLE jobs ADD COLUMN lease_until REAL;
"""

# Version 3: image pools (issue 15). A pool is a plan a person reviews, then runs through the
# queue; each of its images is an ordinary job tagged with the pool and the plan item it
# makes (``pool_item``, the item's deterministic id), so pools are in the history like any
# other job and a resumed pool finds what it already made. ``status`` is checked in Python
# (pools.py), like api and engine above: a CHECK cannot be altered without a rebuild. The
# index serves a pool's jobs (by item) and the foreign key's checks from the pools side.
_V3 = """
CREATE TABLE pools (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    topic      TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'draft',
    plan_json  TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    error      TEXT
);
CREATE INDEX pools_status_created ON pools (status, created_at);
CREATE INDEX pools_created ON pools (created_at);

ALTER TABLE jobs ADD COLUMN pool_id TEXT REFERENCES pools (id);
ALTER TABLE jobs ADD COLUMN pool_item TEXT;
CREATE INDEX jobs_pool ON jobs (pool_id, pool_item);
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)

LATEST_VERSION = len(MIGRATIONS)


class MigrationError(RuntimeError):
    """The database is newer than this code, or a migration broke a foreign key."""


def split_statements(script: str) -> list[str]:
    """Cut a script into complete statements (triggers' inner ``;`` included).

    ``executescript`` would be simpler but commits any open transaction first, which
    would split a migration from its version bump.
    """
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip().strip(";").strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        # Comments-only tails are fine; anything else is an unterminated statement.
        code = "\n".join(ln for ln in buf.splitlines() if not ln.strip().startswith("--"))
        if code.strip():
            raise MigrationError(f"unterminated SQL statement in migration: {buf.strip()[:80]!r}")
    return statements


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the database to ``len(migrations)``; returns how many migrations ran.

    ``conn`` must be in autocommit mode (``isolation_level=None``) and outside a
    transaction. Safe when several processes open the store at once: the version is
    read again under the write lock, so each migration runs exactly once.
    """
    target = len(migrations)
    applied = 0
    while True:
        if user_version(conn) >= target:
            break
        # Foreign keys stay off while a migration may rebuild tables (SQLite's documented
        # recipe); the pragma is a no-op inside a transaction, so set it before BEGIN.
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = user_version(conn)
                if version >= target:
                    conn.execute("ROLLBACK")
                    break
                for statement in split_statements(migrations[version]):
                    conn.execute(statement)
                broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise MigrationError(
                        f"migration {version + 1} left {len(broken)} broken foreign key(s), "
                        f"first: {tuple(broken[0])}"
                    )
                # PRAGMA takes no parameters; version is an int we computed.
                conn.execute(f"PRAGMA user_version = {version + 1:d}")
                conn.execute("COMMIT")
                applied += 1
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute("PRAGMA foreign_keys = ON")
    version = user_version(conn)
    if version > target:
        raise MigrationError(
            f"the job database is at schema version {version}, newer than this bildwerk "
            f"(knows {target}); upgrade bildwerk or use a copy of the database"
        )
    return applied
