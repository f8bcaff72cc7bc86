"""Content hashes: one definition each for a picture's pixels and for stored bytes."""

from __future__ import annotations

import hashlib

from PIL import Image


def image_sha256(image: Image.Image) -> str:
    """SHA-256 of a decoded picture's mode, size and pixels (not of its file's bytes), so the
    same picture hashes alike whichever file format or metadata it came in."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """SHA-256 of bytes: the content address of a stored file."""
    return hashlib.sha256(data).hexdigest()
