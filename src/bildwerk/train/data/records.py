"""The record every source adapter yields, and the adapter protocol."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

# Languages that get their own metadata.csv column; English is the plain `text` column.
CSV_LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "ko", "ru")


@dataclass(frozen=True)
class SourceRecord:
    """One raw picture from one source, with its captions.

    ``group_key`` names "the same picture": records sharing it (a PNG and its SVG,
    filled and outlined letters, a symlink and its target) never land in different
    splits, even when their pixels differ.
    """

    source_id: str
    path: Path
    captions: dict[str, str]
    licence: str
    group_key: str
    # Other captions worth keeping (emoji short names, other folder names), by language.
    alt_captions: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.source_id.split(":", 1)[0]


@dataclass(frozen=True)
class SourceInfo:
    """Where a source's files came from, for the dataset card and build_info.json."""

    name: str
    package: str
    registry: str  # "debian", "npm" or "local"
    version: str
    licence: str
    root: Path
    archive_sha256: str | None = None
    notes: str = ""


@runtime_checkable
class Source(Protocol):
    """A source adapter: fetches its raw files, then lists them as records."""

    name: str
    licence: str

    def fetch(self, cache_dir: Path) -> SourceInfo:
        """Make the raw files available (download once, reuse the cache after)."""
        ...

    def iter_records(self, root: Path) -> Iterator[SourceRecord]:
        """Yield records, in a stable order, from an extracted package root."""
        ...
