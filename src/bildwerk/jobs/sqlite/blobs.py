"""Content-addressed image files under ``root/images/<aa>/<sha256>.png`` and their rows.

* Files are written first (temp file, fsync, atomic ``os.replace``, directory fsync) and
  only then referenced by a row, inside one transaction that also checks the file is
  still there (:meth:`Blobs._ensure_image`). A crash in between leaves an unreferenced
  file, which ``gc()`` removes; a row never points at a file that was not complete.
* Files are only unlinked inside a write transaction that has just seen them
  unreferenced (:meth:`Blobs._collect`). Writers hold the same lock while checking their
  files exist, so a concurrent ``gc()``/``delete()`` never removes a file a new job is
  about to use.
* A temp file's name carries its writer (host, pid, a token of the process), so the
  leftovers of a killed writer are known at once; others wait ``STALE_TEMP_SECONDS``.
* A full disk raises StoreFullError (``errors.writes``), never a bare OSError.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bildwerk.core.errors import InvalidImageError, InvalidRequestError
from bildwerk.jobs.sqlite.db import Database
from bildwerk.jobs.sqlite.errors import CorruptImageError, ImageNotFoundError, writes
from bildwerk.jobs.sqlite.leases import holder_is_dead, new_worker_id
from bildwerk.jobs.sqlite.rows import StoredImage, chunks, now

# Temp files younger than this may belong to a write in progress; gc() leaves them, unless
# their name says their writer is a process of this host that no longer runs.
STALE_TEMP_SECONDS = 3600.0
# Images younger than this that nothing references may be staged for a transaction about to
# commit: collect() leaves them (removing one is safe, see _ensure_image, but costs a rewrite).
ORPHAN_GRACE_SECONDS = 30.0
# probe_space(): "space is back" means room for about one job's results (a few PNGs).
PROBE_BYTES = 1 << 20

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (sha256, bytes, width, height) of an image written to disk, not yet referenced.
Staged = tuple[str, bytes, int, int]


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


_WRITER: dict[int, str] = {}  # pid -> this process's writer tag (made again after a fork)


def _writer_tag() -> str:
    """This process as a file-name part: a worker id (host:pid:token) with '+' for ':'."""
    pid = os.getpid()
    if pid not in _WRITER:
        _WRITER[pid] = new_worker_id().replace(":", "+")
    return _WRITER[pid]


def _temp_is_stale(path: Path, cutoff: float) -> bool:
    """A temp file no write in progress can own: its writer is dead, or it is old."""
    # ".{sha}.{writer tag}.{random}.tmp"; the tag may hold dots (a host name), the rest not.
    parts = path.name[1:].split(".", 1)[-1].rsplit(".", 2)
    if len(parts) == 3 and holder_is_dead(parts[0].replace("+", ":")):
        return True
    return path.stat().st_mtime < cutoff


class Blobs(Database):
    """The image half of the store; ``images_dir`` is set by the store's constructor."""

    images_dir: Path

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
        with writes():
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                _fsync_dir(self.images_dir)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{sha256}.{_writer_tag()}.", suffix=".tmp")
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

    def _stage(self, data: bytes, what: str) -> Staged:
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
            (sha256, width, height, len(data), now()),
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

    # -- garbage collection

    def _collect(self, shas: Sequence[str] | None, min_age: float = 0.0) -> int:
        """Remove rows and files of unreferenced images: of ``shas``, or (None) of every
        image whose row is at least ``min_age`` seconds old."""
        unreferenced = (
            "NOT EXISTS (SELECT 1 FROM job_inputs WHERE sha256 = images.sha256) "
            "AND NOT EXISTS (SELECT 1 FROM job_results WHERE sha256 = images.sha256)"
        )
        removed = 0
        with self.transaction() as conn:
            if shas is None:
                doomed = [
                    r[0]
                    for r in conn.execute(
                        f"SELECT sha256 FROM images WHERE created_at <= ? AND {unreferenced}",
                        (now() - min_age,),
                    )
                ]
            else:
                doomed = []
                for chunk in chunks(list(shas)):
                    marks = ",".join("?" * len(chunk))
                    doomed += [
                        r[0]
                        for r in conn.execute(
                            f"SELECT sha256 FROM images WHERE sha256 IN ({marks}) "
                            f"AND {unreferenced}",
                            tuple(chunk),
                        )
                    ]
            for chunk in chunks(doomed):
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
        return removed

    def _remove_stale_temps(self, folder: Path) -> int:
        removed = 0
        cutoff = now() - STALE_TEMP_SECONDS
        for path in folder.glob(".*.tmp"):
            try:
                if _temp_is_stale(path, cutoff):
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # its writer just renamed it into place (or cleaned up)
        return removed

    def _remove_strays(self, folder: Path, min_age: float) -> int:
        """Image files of ``folder`` with no images row (a crash between writing a file and
        committing its row), at least ``min_age`` old. Listed without the lock, checked and
        unlinked under it, one folder at a time: other writers wait little."""
        cutoff = now() - min_age
        found = []
        for path in folder.glob("*.png"):
            try:
                if _SHA_RE.fullmatch(path.stem) and path.stat().st_mtime <= cutoff:
                    found.append(path.stem)
            except FileNotFoundError:
                pass
        if not found:
            return 0
        removed = 0
        with self.transaction() as conn:
            for chunk in chunks(found):
                marks = ",".join("?" * len(chunk))
                known = {r[0] for r in conn.execute(
                    f"SELECT sha256 FROM images WHERE sha256 IN ({marks})", tuple(chunk))}
                for sha256 in set(chunk) - known:
                    path = self.image_path(sha256)
                    if path.exists():
                        path.unlink()
                        removed += 1
        return removed

    def collect(self, *, min_age: float = ORPHAN_GRACE_SECONDS) -> dict[str, int]:
        """Collect what interrupted writes and deletes left behind; returns counts by kind.

        ``temp``: temp files whose writer is dead (or older than STALE_TEMP_SECONDS);
        ``orphans``: image files no row names and images no job references, at least
        ``min_age`` seconds old. Safe while other processes use the store: a file is
        unlinked only under the write lock, after its row was seen missing or unreferenced
        (a writer that staged it rewrites it under that lock), and a temp file only once no
        live writer can own it.
        """
        # probe_space() writes in images_dir itself, image writes in its sub-folders.
        counts = {"temp": self._remove_stale_temps(self.images_dir),
                  "orphans": self._collect(None, min_age)}
        for folder in sorted(p for p in self.images_dir.glob("*") if p.is_dir()):
            counts["temp"] += self._remove_stale_temps(folder)
            counts["orphans"] += self._remove_strays(folder, min_age)
        return counts

    def probe_space(self, nbytes: int = PROBE_BYTES) -> None:
        """Write, fsync and remove ``nbytes`` beside the images: StoreFullError (or
        StoreUnwritableError) while the disk cannot take about one more job's results."""
        with writes():
            fd, tmp = tempfile.mkstemp(dir=self.images_dir, prefix=f".probe.{_writer_tag()}.",
                                       suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(bytes(nbytes))
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                Path(tmp).unlink(missing_ok=True)

    def gc(self) -> int:
        """Remove images (rows and files) no job references and stale temp files, whatever
        their age; returns files removed."""
        return sum(self.collect(min_age=0.0).values())

    def _image_problems(self, *, hashes: bool) -> list[str]:
        """Image rows whose file is missing or (``hashes``) no longer matches its hash."""
        problems: list[str] = []
        for (sha256,) in self._conn().execute("SELECT sha256 FROM images").fetchall():
            path = self.image_path(sha256)
            if not path.is_file():
                problems.append(f"image {sha256}: file missing ({path})")
            elif hashes and not self._file_matches(path, sha256):
                problems.append(f"image {sha256}: bytes do not match the hash ({path})")
        return problems
