"""SVG rendering through ``rsvg-convert`` (Debian ``librsvg2-bin``), found or fetched.

Pillow cannot read SVG and no pure-Python renderer ships offline, so the builder uses
librsvg's command-line tool. It is looked up on PATH first; otherwise the package is
fetched with ``apt-get download`` into the source cache (no root needed, the libraries
it links against are part of most desktop and server installs); as a last resort, when
running as root, it is installed with ``apt-get install``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from PIL import Image

from bildwerk.images.io import DATASET_LIMITS, decode_image

from .errors import SourceUnavailableError
from .fetch import fetch_deb

log = logging.getLogger(__name__)

RSVG_PACKAGE = "librsvg2-bin"


def _works(binary: str) -> str | None:
    try:
        run = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if run.returncode != 0:
        return None
    return run.stdout.strip() or "rsvg-convert"


def find_rsvg_convert(cache_dir: Path, *, allow_fetch: bool = True) -> tuple[str, str] | None:
    """Return ``(path, version)`` of a working rsvg-convert, or None (SVGs get skipped)."""
    on_path = shutil.which("rsvg-convert")
    if on_path and (version := _works(on_path)):
        return on_path, version
    cached = cache_dir / "debian" / RSVG_PACKAGE / "root" / "usr" / "bin" / "rsvg-convert"
    if cached.is_file() and (version := _works(str(cached))):
        return str(cached), version
    if not allow_fetch:
        return None
    try:
        pkg = fetch_deb(RSVG_PACKAGE, cache_dir)
        binary = pkg.root / "usr" / "bin" / "rsvg-convert"
        if binary.is_file() and (version := _works(str(binary))):
            return str(binary), version
    except SourceUnavailableError as exc:
        log.warning("could not fetch %s: %s", RSVG_PACKAGE, exc)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # The extracted binary lacks a shared library: let apt pull in the dependencies.
        run = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", RSVG_PACKAGE],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if run.returncode == 0 and (found := shutil.which("rsvg-convert")):
            if version := _works(found):
                return found, version
    return None


def render_svg(path: Path, binary: str, box: int) -> Image.Image:
    """Render an SVG to RGBA so that it fits a ``box`` x ``box`` square, keeping its aspect."""
    run = subprocess.run(
        [binary, "--width", str(box), "--height", str(box), "--keep-aspect-ratio", str(path)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    if run.returncode != 0 or not run.stdout:
        message = run.stderr.decode("utf-8", "replace").strip()[-300:]
        raise ValueError(f"rsvg-convert failed on {path.name}: {message}")
    return decode_image(run.stdout, limits=DATASET_LIMITS, what=f"rendering of {path.name}")
