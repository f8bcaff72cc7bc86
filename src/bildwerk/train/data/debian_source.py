"""What the Debian-packaged sources share: where their files live and how they are fetched."""

from __future__ import annotations

from pathlib import Path

from .fetch import fetch_deb
from .records import SourceInfo


def find_content_dir(root: Path, subdir: Path, short: str, pattern: str, what: str) -> Path:
    """Accept the package root (with usr/share/...), the content folder, or the folder itself."""
    for candidate in (root / subdir, root / short, root):
        if candidate.is_dir() and any(candidate.rglob(pattern)):
            return candidate
    raise FileNotFoundError(f"no {what} under {root}")


class DebianPackageSource:
    """A source shipped as one Debian package; pass ``root`` to read an extracted tree."""

    name: str
    package: str
    licence: str
    notes: str = ""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else None

    def fetch(self, cache_dir: Path) -> SourceInfo:
        if self.root is not None:
            return SourceInfo(self.name, self.package, "local", "local", self.licence, self.root)
        pkg = fetch_deb(self.package, cache_dir)
        return SourceInfo(
            self.name, self.package, "debian", pkg.version, self.licence, pkg.root, pkg.sha256,
            notes=self.notes,
        )
