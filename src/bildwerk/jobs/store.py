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
    running -> queued     recover()         (the previous process died mid-job)
    running -> queued     requeue()         (a graceful shutdown interrupted it)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sqlite3
import struct
import tempfile
import threading
import time
import unicodedata
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bildwerk.errors import BildwerkError, InvalidImageError, InvalidRequestError
from bildwerk.jobs.migrations import MIGRATIONS, migrate

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
APIS = ("native", "a1111", "openai", "museum")
ENGINES = ("local", "openai")
INPUT_ROLES = ("image", "mask")

DB_NAME = "bildwerk.db"
IMAGES_DIR = "images"
BUSY_TIMEOUT_MS = 5000
# Temp files younger than this may belong to a write in progress; gc() leaves them.
STALE_TEMP_SECONDS = 3600.0
# A job whose process died this many times while running it is failed, not retried.
DEFAULT_MAX_ATTEMPTS = 3

_SHA_RE = re.compile(r"[0-9a-f]{64}")
# Job ids end up in export file names, so only filename-safe characters.
_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_LANG_RE = re.compile(r"[a-z]{2,3}")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SQLite's historical limit on bound variables; IN lists are chunked below it.
_MAX_VARS = 500

_JOB_COLUMNS = (
    "id, created_at, started_at, finished_at, status, api, engine, model, mode, prompt, "
    "original_prompt, language, seed, request_json, options_json, record_json, error_type, "
    "error_message, cancel_requested, attempts"
)


# ---------------------------------------------------------------------------- errors


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
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class JobExistsError(StoreError):
    code = "job_exists"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"a job with id {job_id!r} already exists")
        self.job_id = job_id


class JobStateError(StoreError):
    """A transition the job's current status does not allow (finishing a cancelled job...)."""

    code = "job_state"

    def __init__(self, job_id: str, status: str, action: str) -> None:
        super().__init__(f"cannot {action} job {job_id!r}: it is {status}")
        self.job_id = job_id
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


# ------------------------------------------------------------------------------ rows


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class JobResult:
    idx: int
    sha256: str
    seed: int | None
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class JobRow:
    id: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    status: str
    api: str
    engine: str
    model: str | None
    mode: str | None
    prompt: str
    original_prompt: str | None
    language: str | None
    seed: int | None
    request: dict[str, Any]
    options: dict[str, Any]
    record: dict[str, Any] | None
    error_type: str | None
    error_message: str | None
    cancel_requested: bool
    attempts: int
    inputs: dict[str, str] = field(default_factory=dict)  # role ("image", "mask") -> sha256
    results: list[JobResult] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for the REST layer)."""
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def _now() -> float:
    return time.time()


def _check_sha(sha256: str) -> str:
    # The hash becomes a path, so anything but 64 lowercase hex digits is refused.
    if not isinstance(sha256, str) or not _SHA_RE.fullmatch(sha256):
        raise InvalidRequestError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def _png_size(data: bytes, what: str = "image") -> tuple[int, int]:
    """Width and height from the IHDR chunk: cheap, and rejects non-PNG bytes early."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImageError(f"the {what} must be PNG bytes, got {type(data).__name__}")
    head = bytes(data[:24])
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise InvalidImageError(f"the {what} is not a PNG file; the store keeps PNGs only")
    width, height = struct.unpack(">II", head[16:24])
    if width == 0 or height == 0:
        raise InvalidImageError(f"the {what} has no pixels ({width}x{height})")
    return width, height


def _fsync_dir(path: Path) -> None:
    # Makes a rename or a new entry durable; POSIX only (Windows cannot open folders).
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fold(text: str) -> str:
    """Normalised, case-folded text for search: Unicode-aware, unlike SQLite's LIKE."""
    return unicodedata.normalize("NFKC", text).casefold()


def _like_escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _chunks(items: Sequence[str], size: int = _MAX_VARS) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _request_columns(request: dict[str, Any]) -> dict[str, Any]:
    """The request fields copied into columns for filtering and search."""
    record = request.get("prompt_record")
    record = record if isinstance(record, dict) else {}
    prompt = request.get("prompt")
    prompt = prompt if isinstance(prompt, str) else ""
    original = record.get("original")
    original = original if isinstance(original, str) else None
    language = record.get("language")
    language = language.lower() if isinstance(language, str) and language else None
    seed = request.get("seed")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    model = request.get("model")
    mode = request.get("mode")
    return {
        "model": model if isinstance(model, str) else None,
        "mode": mode if isinstance(mode, str) else None,
        "prompt": prompt,
        "original_prompt": original,
        "language": language,
        "seed": seed,
        "search_text": _fold(prompt + "\n" + (original or "")),
    }


# ----------------------------------------------------------------------------- store


class Store:
    """Jobs, their inputs and results, in ``root/bildwerk.db`` and ``root/images/``.

    Thread-safe: each thread gets its own connection (WAL lets readers run beside the
    one writer), and several processes may share the folder. ``recover()`` is the one
    exception: it assumes no other worker process is alive.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        self.images_dir = self.root / IMAGES_DIR
        self._synchronous = synchronous
        self._local = threading.local()
        self._conns: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self.images_dir.mkdir(parents=True, exist_ok=True)
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

    # -- connections and transactions

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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction on this thread's connection; nested calls join the outer one.

        ``write=True`` (the default) starts ``BEGIN IMMEDIATE``: the write lock is taken
        at once (waiting up to busy_timeout), so the transaction cannot fail later when
        it first writes. ``write=False`` gives a consistent read snapshot.
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
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        self._local.depth = 1
        self._local.write = write
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._local.depth = 0

    # -- images

    def image_path(self, sha256: str) -> Path:
        _check_sha(sha256)
        return self.images_dir / sha256[:2] / f"{sha256}.png"

    def _file_matches(self, path: Path, sha256: str) -> bool:
        try:
            return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
        except FileNotFoundError:
            return False

    def _write_file(self, sha256: str, data: bytes) -> Path:
        """Atomically place ``data`` at its content address (idempotent, self-healing)."""
        path = self.image_path(sha256)
        if self._file_matches(path, sha256):
            return path
        folder = path.parent
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.images_dir)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{sha256}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(folder)
        return path

    def _stage(self, data: bytes, what: str) -> tuple[str, bytes, int, int]:
        """Validate and write an image before its transaction (no lock held for the I/O)."""
        width, height = _png_size(data, what)
        data = bytes(data)
        sha256 = hashlib.sha256(data).hexdigest()
        self._write_file(sha256, data)
        return sha256, data, width, height

    def _ensure_image(
        self, conn: sqlite3.Connection, sha256: str, data: bytes, width: int, height: int
    ) -> None:
        """Inside a write transaction: make sure the file exists and has its row.

        gc() and delete() unlink files only under the write lock, which we hold now, so
        a file seen here stays until our references are committed.
        """
        if not self.image_path(sha256).is_file():
            self._write_file(sha256, data)
        conn.execute(
            "INSERT OR IGNORE INTO images (sha256, width, height, bytes, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (sha256, width, height, len(data), _now()),
        )

    def put_image(self, png: bytes) -> str:
        """Store PNG bytes under their sha256 (idempotent); returns the hash.

        An image no job references is garbage: ``gc()`` may remove it.
        """
        staged = self._stage(png, "image")
        with self.transaction() as conn:
            self._ensure_image(conn, *staged)
        return staged[0]

    def image_info(self, sha256: str) -> StoredImage | None:
        _check_sha(sha256)
        row = self._conn().execute(
            "SELECT sha256, width, height, bytes FROM images WHERE sha256 = ?", (sha256,)
        ).fetchone()
        return StoredImage(**dict(row)) if row else None

    def read_image(self, sha256: str) -> bytes:
        """The stored bytes, verified against their hash.

        Raises ImageNotFoundError for an unknown hash and CorruptImageError when the file
        of a known image is gone or its bytes changed.
        """
        path = self.image_path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            if self.image_info(sha256) is None:
                raise ImageNotFoundError(sha256) from None
            raise CorruptImageError(sha256, path, "the file is missing") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CorruptImageError(sha256, path, "its bytes do not match the hash")
        return data

    # -- creating and running jobs

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
        columns = _request_columns(request)

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
                        _now(),
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
                (_now(), row["id"]),
            )
            return self._get(conn, row["id"])

    def recover(self, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
        """At startup: jobs left running by a dead process; returns how many were changed.

        They go back to the queue, except those whose cancellation was requested
        (cancelled) and those that already ran ``max_attempts`` times (failed with
        error_type "interrupted": a job that kills the process must not loop forever).
        Call only while no other worker process uses this store.
        """
        now = _now()
        with self.transaction() as conn:
            cancelled = conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? "
                "WHERE status = 'running' AND cancel_requested = 1",
                (now,),
            ).rowcount
            failed = conn.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, error_type = 'interrupted', "
                "error_message = 'bildwerk stopped while running this job ' || attempts || "
                "' time(s); it is not retried again' "
                "WHERE status = 'running' AND attempts >= ?",
                (now, max_attempts),
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
                (_now(), record_json, job_id),
            )
            final = record.get("request") if isinstance(record, dict) else None
            if isinstance(final, dict) and isinstance(final.get("prompt_record"), dict):
                # The prompt pipeline ran in the worker: search and export see the prompt the
                # model got, the user's own words and their language.
                cols = _request_columns(final)
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
                (status, _now(), error_type, message, job_id),
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
                    (_now(), job_id),
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

    # -- reading

    def get(self, job_id: str) -> JobRow | None:
        with self.transaction(write=False) as conn:
            return self._get(conn, job_id)

    def _get(self, conn: sqlite3.Connection, job_id: str) -> JobRow | None:
        rows = self._rows(
            conn, conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        )
        return rows[0] if rows else None

    def _rows(self, conn: sqlite3.Connection, cursor: Iterable[sqlite3.Row]) -> list[JobRow]:
        """Job rows with their inputs and results (two queries per 500 jobs, not per job)."""
        raw = [dict(r) for r in cursor]
        ids = [r["id"] for r in raw]
        inputs: dict[str, dict[str, str]] = {i: {} for i in ids}
        results: dict[str, list[JobResult]] = {i: [] for i in ids}
        for chunk in _chunks(ids):
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
                    record=_json_or_none(r["record_json"]),
                    error_type=r["error_type"],
                    error_message=r["error_message"],
                    cancel_requested=bool(r["cancel_requested"]),
                    attempts=r["attempts"],
                    inputs=inputs[r["id"]],
                    results=results[r["id"]],
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
            for term in _fold(text).split():
                clauses.append("search_text LIKE ? ESCAPE '\\'")
                params.append(f"%{_like_escape(term)}%")
        for column, value in (("model", model), ("api", api), ("mode", mode)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            clauses.append("created_at >= ?")
            params.append(float(since))
        if until is not None:
            clauses.append("created_at < ?")
            params.append(float(until))
        if job_ids is not None:
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
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[JobRow]:
        """Jobs newest first. ``text``: every word must occur in the prompt or the
        original prompt (case-insensitive, Unicode-aware); ``since``/``until``: epoch
        seconds on created_at (until exclusive); ``limit=None``: no limit."""
        if limit is not None and limit < 0:
            raise InvalidRequestError(f"limit must be >= 0, got {limit}")
        if offset < 0:
            raise InvalidRequestError(f"offset must be >= 0, got {offset}")
        where, params = self._where(
            status=status, text=text, model=model, api=api, mode=mode, since=since, until=until
        )
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs{where} ORDER BY created_at DESC, rowid DESC"
        sql += " LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        with self.transaction(write=False) as conn:
            return self._rows(conn, conn.execute(sql, params))

    def count(self, status: str | Iterable[str] | None = None) -> int:
        where, params = self._where(status=status)
        return int(self._conn().execute(f"SELECT count(*) FROM jobs{where}", params).fetchone()[0])

    def queue_depth(self) -> int:
        """Jobs queued or running."""
        return self.count(ACTIVE_STATUSES)

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next queued job to run, 2 for the one after...; None unless queued."""
        with self.transaction(write=False) as conn:
            row = conn.execute("SELECT created_at, rowid FROM jobs WHERE id = ? AND status = 'queued'",
                               (job_id,)).fetchone()
            if row is None:
                return None
            (ahead,) = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND "
                "(created_at < ? OR (created_at = ? AND rowid < ?))", (row[0], row[0], row[1])).fetchone()
        return int(ahead) + 1

    # -- deleting and garbage collection

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

    def _collect(self, shas: Sequence[str] | None) -> int:
        """Remove rows and files of unreferenced images (all when ``shas`` is None)."""
        unreferenced = (
            "NOT EXISTS (SELECT 1 FROM job_inputs WHERE sha256 = images.sha256) "
            "AND NOT EXISTS (SELECT 1 FROM job_results WHERE sha256 = images.sha256)"
        )
        removed = 0
        with self.transaction() as conn:
            if shas is None:
                doomed = [
                    r[0] for r in conn.execute(f"SELECT sha256 FROM images WHERE {unreferenced}")
                ]
            else:
                doomed = []
                for chunk in _chunks(list(shas)):
                    marks = ",".join("?" * len(chunk))
                    doomed += [
                        r[0]
                        for r in conn.execute(
                            f"SELECT sha256 FROM images WHERE sha256 IN ({marks}) "
                            f"AND {unreferenced}",
                            tuple(chunk),
                        )
                    ]
            for chunk in _chunks(doomed):
                conn.execute(
                    f"DELETE FROM images WHERE sha256 IN ({','.join('?' * len(chunk))})",
                    tuple(chunk),
                )
            # Unlinked under the write lock (see _ensure_image). If the commit then fails
            # the rows come back without files, but nothing references them.
            for sha256 in doomed:
                path = self.image_path(sha256)
                if path.exists():
                    path.unlink()
                    removed += 1
            if shas is None:
                removed += self._remove_stray_files(conn)
        return removed

    def _remove_stray_files(self, conn: sqlite3.Connection) -> int:
        """Files with no images row (a crash after writing) and stale temp files."""
        known = {r[0] for r in conn.execute("SELECT sha256 FROM images")}
        removed = 0
        cutoff = _now() - STALE_TEMP_SECONDS
        for path in self.images_dir.glob("*/*"):
            name = path.name
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass  # its writer just renamed it into place
            elif name.endswith(".png") and _SHA_RE.fullmatch(name[:-4]):
                if name[:-4] not in known:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    def gc(self) -> int:
        """Remove images (rows and files) no job references; returns files removed."""
        return self._collect(None)

    def verify(self, *, hashes: bool = True) -> list[str]:
        """Problems found: SQLite integrity, foreign keys, missing or damaged files."""
        problems: list[str] = []
        conn = self._conn()
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems += [f"database: {line}" for line in integrity]
        for r in conn.execute("PRAGMA foreign_key_check"):
            problems.append(f"database: broken foreign key {tuple(r)}")
        for (sha256,) in conn.execute("SELECT sha256 FROM images").fetchall():
            path = self.image_path(sha256)
            if not path.is_file():
                problems.append(f"image {sha256}: file missing ({path})")
            elif hashes and not self._file_matches(path, sha256):
                problems.append(f"image {sha256}: bytes do not match the hash ({path})")
        return problems

    # -- export

    def export(
        self, job_ids: Sequence[str] | None, out_dir: str | os.PathLike[str], **filters: Any
    ) -> Path:
        """Write succeeded jobs' results as an imagefolder ``bildwerk train`` accepts.

        ``images/<job>_<idx>.png`` plus ``metadata.csv`` (file_name, text, seed, model,
        job_id, and text_<lang> with the user's original words for non-English prompts).
        ``job_ids`` selects jobs (unknown ids raise JobNotFoundError; ones not succeeded
        are skipped); ``filters`` are list_jobs' (text, model, api, mode, since, until).
        Jobs without a prompt are skipped (a caption is required). Refuses a non-empty
        ``out_dir``. metadata.csv is written last, so a broken export is recognisable.
        """
        out = Path(out_dir)
        if "status" in filters:
            raise InvalidRequestError("export takes succeeded jobs only; no status filter")
        allowed = {"text", "model", "api", "mode", "since", "until"}
        unknown = sorted(set(filters) - allowed)
        if unknown:
            raise TypeError(f"export() got unexpected filter(s): {', '.join(unknown)}")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ExportError(
                f"{out} is not an empty folder; export into a new or empty folder "
                "so nothing is mixed in or overwritten"
            )

        ids = list(dict.fromkeys(job_ids)) if job_ids is not None else None
        jobs: list[JobRow] = []
        with self.transaction(write=False) as conn:
            if ids is not None:
                found = set()
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    found |= {
                        r[0]
                        for r in conn.execute(f"SELECT id FROM jobs WHERE id IN ({marks})", chunk)
                    }
                missing = [i for i in ids if i not in found]
                if missing:
                    raise JobNotFoundError(missing[0])
            for chunk in _chunks(ids) if ids is not None else [None]:
                where, params = self._where(status="succeeded", job_ids=chunk, **filters)
                jobs += self._rows(
                    conn,
                    conn.execute(
                        f"SELECT {_JOB_COLUMNS} FROM jobs{where} ORDER BY created_at, rowid",
                        params,
                    ),
                )

        rows: list[dict[str, str]] = []
        languages: set[str] = set()
        copies: list[tuple[str, str]] = []
        for job in jobs:
            text = job.prompt.strip()
            if not text or not job.results:
                continue
            lang = job.language if job.language and _LANG_RE.fullmatch(job.language) else None
            original = (job.original_prompt or "").strip()
            model = job.model or ""
            record_model = (job.record or {}).get("model")
            if isinstance(record_model, dict) and isinstance(record_model.get("name"), str):
                model = record_model["name"]  # the model that actually ran
            for result in job.results:
                name = f"images/{job.id}_{result.idx}.png"
                row = {
                    "file_name": name,
                    "text": text,
                    "seed": "" if result.seed is None else str(result.seed),
                    "model": model,
                    "job_id": job.id,
                }
                if lang and lang != "en" and original:
                    row[f"text_{lang}"] = original
                    languages.add(lang)
                rows.append(row)
                copies.append((name, result.sha256))
        if not rows:
            raise ExportError("nothing to export: no succeeded job with results matches")

        (out / "images").mkdir(parents=True, exist_ok=True)
        for name, sha256 in copies:
            (out / name).write_bytes(self.read_image(sha256))  # hash-verified copy
        columns = ["file_name", "text", "seed", "model", "job_id"]
        columns += [f"text_{lang}" for lang in sorted(languages)]
        tmp = out / ".metadata.csv.tmp"
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, out / "metadata.csv")
        return out
