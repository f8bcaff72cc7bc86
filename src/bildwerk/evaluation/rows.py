"""The held-out rows the evaluation judges: those whose English caption names ImageNet classes.

Rows are read with the training reader (:mod:`bildwerk.train.imagefolder`) and their
English captions mapped by :mod:`bildwerk.models.imagenet.labels`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bildwerk.models.imagenet.labels import ImagenetMatcher, default_matcher
from bildwerk.train.imagefolder import metadata_path, read_metadata, row_captions, rows_of_split


@dataclass(frozen=True)
class EvalRow:
    """One held-out picture whose English caption names ImageNet classes."""

    file_name: str
    image_path: Path
    captions: dict[str, str]  # "en", "de", "ko", ...; only non-empty captions
    classes: frozenset[int]
    term: str  # the phrase of the English caption that named the classes
    extra: dict[str, str] = field(default_factory=dict)  # source, licence


def select_rows(metadata_csv: str | Path, split: str | None = "test",
                matcher: ImagenetMatcher | None = None) -> list[EvalRow]:
    """Rows of ``split`` (all rows if None) whose English caption maps to ImageNet classes.

    ``metadata_csv`` may be the CSV or the dataset folder. ``file_name`` is relative to
    the folder holding the CSV, as in Hugging Face imagefolder datasets. Rows are read
    as training reads them (:mod:`bildwerk.train.imagefolder`): a row without a split
    is a training row.
    """
    meta = metadata_path(metadata_csv)
    matcher = matcher or default_matcher()
    rows = []
    for row in rows_of_split(read_metadata(meta), split):
        captions = row_captions(row)
        if "en" not in captions or not row.get("file_name"):
            continue
        found = matcher.match(captions["en"])
        if found is None:
            continue
        rows.append(EvalRow(
            file_name=row["file_name"],
            image_path=meta.parent / row["file_name"],
            captions=captions,
            classes=found.classes,
            term=found.term,
            extra={k: row[k] for k in ("source", "licence") if row.get(k)},
        ))
    return rows


def count_split(metadata_csv: str | Path, split: str | None = "test") -> int:
    """How many rows the split has (mapped or not), for the report."""
    return len(rows_of_split(read_metadata(metadata_csv), split))
