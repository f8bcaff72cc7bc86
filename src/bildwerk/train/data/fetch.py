"""Fetch raw packages through the ordinary registry clients (apt-get, npm) into a cache.

Each package is downloaded and extracted once; a small ``fetched.json`` next to the
extracted tree marks it complete, so later builds run without any network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceUnavailableError

CACHE_ENV = "BILDWERK_SOURCES_CACHE"
_MARKER = "fetched.json"


def default_cache_dir() -> Path:
    """``$BILDWERK_SOURCES_CACHE``, else ``$XDG_CACHE_HOME/bildwerk/sources``, else ~/.cache/..."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bildwerk" / "sources"


@dataclass(frozen=True)
class FetchedPackage:
    package: str
    version: str
    root: Path  # the extracted tree
    archive: Path  # removed after extraction; its name and hash are kept for the record
    sha256: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise SourceUnavailableError(
            f"`{cmd[0]}` is not installed; it is needed to fetch this source "
            f"(command: {' '.join(cmd)})"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise SourceUnavailableError(
            f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s; is the registry reachable?"
        ) from exc


def _tail(text: str, lines: int = 8) -> str:
    # apt warns about its sandbox user when run as root in a private folder: noise here.
    kept = [ln for ln in text.strip().splitlines() if "unsandboxed" not in ln]
    return "\n".join(kept[-lines:])


def _load_marker(folder: Path) -> FetchedPackage | None:
    marker = folder / _MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        pkg = FetchedPackage(
            package=data["package"],
            version=data["version"],
            root=folder / "root",
            archive=folder / data["archive"],
            sha256=data["sha256"],
        )
    except (ValueError, KeyError):
        return None
    return pkg if pkg.root.is_dir() else None


def _save_marker(folder: Path, pkg: FetchedPackage) -> None:
    data = {
        "package": pkg.package,
        "version": pkg.version,
        "archive": pkg.archive.name,
        "sha256": pkg.sha256,
    }
    (folder / _MARKER).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


_MISSING_LISTS = re.compile(
    r"Unable to locate package|has no installation candidate|Can't select candidate|"
    r"No packages found|Failed to fetch|404\s+Not Found",
    re.IGNORECASE,
)


def fetch_deb(package: str, cache_dir: Path) -> FetchedPackage:
    """``apt-get download PACKAGE`` then ``dpkg -x``, into ``cache_dir/debian/PACKAGE``."""
    folder = cache_dir / "debian" / package
    if cached := _load_marker(folder):
        return cached
    download = folder / "download"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True, exist_ok=True)

    cmd = ["apt-get", "download", package]
    result = _run(cmd, cwd=download)
    if result.returncode != 0 and _MISSING_LISTS.search(result.stderr + result.stdout):
        # The package lists are missing or stale: refresh them once, then retry.
        update = _run(["apt-get", "update"], timeout=600)
        if update.returncode != 0:
            hint = (
                " (apt-get update needs root: run `sudo apt-get update` once)"
                if hasattr(os, "geteuid") and os.geteuid() != 0
                else ""
            )
            raise SourceUnavailableError(
                f"apt-get download {package} failed and `apt-get update` failed too{hint}; "
                f"is the Debian mirror reachable?\n{_tail(update.stderr)}"
            )
        result = _run(cmd, cwd=download)
    if result.returncode != 0:
        raise SourceUnavailableError(
            f"`apt-get download {package}` failed (exit {result.returncode}); "
            f"is the Debian mirror reachable?\n{_tail(result.stderr + result.stdout)}"
        )
    debs = sorted(download.glob("*.deb"))
    if not debs:
        raise SourceUnavailableError(f"`apt-get download {package}` produced no .deb file")
    deb = folder / debs[-1].name
    debs[-1].replace(deb)
    shutil.rmtree(download, ignore_errors=True)

    version_run = _run(["dpkg-deb", "-f", str(deb), "Version"])
    version = version_run.stdout.strip() if version_run.returncode == 0 else "unknown"
    partial = folder / "root.partial"
    shutil.rmtree(partial, ignore_errors=True)
    extract = _run(["dpkg", "-x", str(deb), str(partial)])
    if extract.returncode != 0:
        raise SourceUnavailableError(f"`dpkg -x {deb.name}` failed:\n{_tail(extract.stderr)}")
    return _finish(folder, partial, package, version, deb)


def _finish(folder: Path, partial: Path, package: str, version: str, archive: Path) -> FetchedPackage:
    """Put the extracted ``partial`` tree in place as ``folder/root``, record it, drop the archive.

    The marker is written only once the tree is complete, so an interrupted fetch is
    redone; the extracted tree is what is used, so deleting the archive halves the cache.
    """
    root = folder / "root"
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    pkg = FetchedPackage(package, version, root, archive, _sha256(archive))
    _save_marker(folder, pkg)
    archive.unlink(missing_ok=True)
    return pkg


def fetch_npm(package: str, version: str, cache_dir: Path) -> FetchedPackage:
    """``npm pack PACKAGE@VERSION`` into ``cache_dir/npm/PACKAGE-VERSION``, then untar."""
    folder = cache_dir / "npm" / f"{package.replace('/', '__')}-{version}"
    if cached := _load_marker(folder):
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    result = _run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=folder)
    if result.returncode != 0:
        raise SourceUnavailableError(
            f"`npm pack {package}@{version}` failed (exit {result.returncode}); "
            f"is the npm registry reachable?\n{_tail(result.stderr + result.stdout)}"
        )
    names = [ln.strip() for ln in result.stdout.splitlines() if ln.strip().endswith(".tgz")]
    tgz = folder / names[-1] if names else None
    if tgz is None or not tgz.is_file():
        found = sorted(folder.glob("*.tgz"))
        if not found:
            raise SourceUnavailableError(f"`npm pack {package}@{version}` produced no .tgz file")
        tgz = found[-1]
    partial = folder / "root.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    with tarfile.open(tgz, "r:gz") as tar:
        # The "data" filter refuses absolute paths, links out of the tree and devices.
        tar.extractall(partial, filter="data")
    return _finish(folder, partial, package, version, tgz)
