"""The SHA-256 of model files, computed once and kept (``$BILDWERK_HOME/hashes.json``).

A1111 shows a checkpoint as ``name [shorthash]`` (the first 10 hex digits of the file's
SHA-256) and clients send that title back. Hashing a multi-gigabyte checkpoint takes seconds,
so a hash is kept with the file's size and modification time and reused until either changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from bildwerk.core.paths import bildwerk_home

HASHES_FILE = "hashes.json"
_LOCK = threading.Lock()
_CHUNK = 8 * 1024 * 1024


def _cache_path() -> Path:
    return bildwerk_home() / HASHES_FILE


def _read() -> dict[str, dict]:
    try:
        data = json.loads(_cache_path().read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: Path) -> str:
    """The file's SHA-256 (hex), from the cache when its size and mtime are unchanged."""
    path = Path(path).resolve()
    st = path.stat()
    key, stamp = str(path), [st.st_size, st.st_mtime_ns]
    with _LOCK:
        cached = _read().get(key)
    if isinstance(cached, dict) and cached.get("stamp") == stamp and isinstance(cached.get("sha256"), str):
        return cached["sha256"]
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    with _LOCK:
        data = _read()
        data[key] = {"stamp": stamp, "sha256": digest}
        target = _cache_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), "utf-8")
        os.replace(tmp, target)  # a reader never sees half a file
    return digest


def short_hash(sha256: str) -> str:
    """A1111's short hash: the first 10 hex digits."""
    return sha256[:10]
