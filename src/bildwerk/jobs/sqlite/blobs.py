"""Content-addressed image files under ``root/images/<aa>/<sha256>.png`` and their rows.

* Files are written first (temp file, fsync, atomic ``os.replace``, directory fsync) and
  only then referenced by a row, inside one transaction that also checks the file is
  still there (:meth:`Blobs._ensure_image`). A crash in between leaves an unreferenced
  file, which ``gc()`` removes; a row never points at a file that was not complete.
* Files are only unlinked inside a write transaction that has just seen them
  unreferenced (:meth:`Blobs._collect`). Writers hold the same lock while checking their
  files exist, so a concurrent ``gc()``/``delete()`` never removes a file a new job is
  about to use.
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
from bildwerk.jobs.sqlite.errors import CorruptImageError, ImageNotFoundError
from bildwerk.jobs.sqlite.rows import StoredImage, chunks, now

# Temp files younger than this may belong to a write in progress; gc() leaves them.
STALE_TEMP_SECONDS = 3600.0

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
            if shas is None:
                removed += self._remove_stray_files(conn)
        return removed

    def _remove_stray_files(self, conn: sqlite3.Connection) -> int:
        """Files with no images row (a crash after writing) and stale temp files."""
        known = {r[0] for r in conn.execute("SELECT sha256 FROM images")}
        removed = 0
        cutoff = now() - STALE_TEMP_SECONDS
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
