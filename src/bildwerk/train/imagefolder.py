"""Load an imagefolder (images + metadata.csv) into memory for training.

The format is the one users already have: ``metadata.csv`` with ``file_name`` and
``text``; extra caption columns ``text_<lang>`` (``text_de``, ``text_ko``...) give
the same picture in other languages, and an optional ``split`` column keeps
held-out rows out of training. Small clip-art datasets fit in memory, which keeps
a CPU epoch free of decoding work.

:func:`read_metadata`, :func:`row_captions` and :func:`rows_of_split` are the one
reader of that format; the evaluation harness uses them too. They need no torch.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from bildwerk.core.errors import InvalidRequestError
from bildwerk.images.io import DATASET_LIMITS, load_image_file, to_rgb

if TYPE_CHECKING:
    import torch

# Pictures whose caption names text or symbols must not be mirrored (letters read backwards).
_NO_FLIP = re.compile(r"\b(letter|sign|number|digit|flag|word|keycap|text|clock|arrow)\b", re.I)


@dataclass
class CaptionedImages:
    images: torch.Tensor  # (N, 3, H, W) uint8
    captions: list[dict[str, str]]  # per row: lang -> caption ("en" for the text column)
    flippable: torch.Tensor  # (N,) bool
    file_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def languages(self) -> list[str]:
        return caption_languages(self.captions)


def caption_languages(captions: Iterable[Mapping[str, str]]) -> list[str]:
    """Every language any row has a caption in, sorted."""
    return sorted({lang for caps in captions for lang in caps})


# Detecting a caption's language costs a few ms: a large folder's text column is sampled.
DETECT_AT_MOST = 1000


def caption_language_counts(captions: list[Mapping[str, str]]) -> tuple[dict[str, int], bool]:
    """How many captions are in each language, most first, and whether that is an estimate.

    A ``text_xx`` column says its language; the ``text`` column (listed as "en") holds what
    the folder's owner wrote, German for a German museum, so its captions are detected
    (``prompts.language.detect_language``); past ``DETECT_AT_MOST`` rows an evenly spread
    sample is detected and its counts scaled to the column (the second value is then True).
    """
    from collections import Counter

    from bildwerk.prompts.language import detect_language

    counts: Counter[str] = Counter()
    texts = [caps["en"] for caps in captions if caps.get("en")]
    for caps in captions:
        counts.update(lang for lang in caps if lang != "en")
    sample = texts if len(texts) <= DETECT_AT_MOST else texts[:: -(-len(texts) // DETECT_AT_MOST)]
    detected = Counter(detect_language(t).language or "en" for t in sample)
    scale = len(texts) / len(sample) if sample else 0.0
    counts.update({lang: round(n * scale) for lang, n in detected.items()})
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))), len(sample) < len(texts)


def main_languages(counts: Mapping[str, int], *, share: float = 0.05) -> list[str]:
    """The languages of at least ``share`` of the captions, sorted: what a model trained on them
    records (a stray misdetected caption does not make a language the model's)."""
    total = sum(counts.values())
    return sorted(lang for lang, n in counts.items() if total and n >= share * total)


def metadata_path(path: str | Path) -> Path:
    """The ``metadata.csv`` of a dataset folder, or ``path`` itself when it is the CSV."""
    p = Path(path)
    return p / "metadata.csv" if p.is_dir() else p


def read_metadata(path: str | Path) -> list[dict[str, str]]:
    """All rows of an imagefolder ``metadata.csv`` (``path``: the folder or the CSV) as
    dicts of stripped strings; a missing cell is "", cells past the header are dropped."""
    with metadata_path(path).open(newline="", encoding="utf-8") as fh:
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(fh)]


def row_captions(row: Mapping[str, str]) -> dict[str, str]:
    """A row's non-empty captions by language: ``text`` is "en", ``text_xx`` is "xx"."""
    out = {"en": row.get("text", "")}
    for key, value in row.items():
        if key.startswith("text_"):
            out[key.removeprefix("text_")] = value
    return {k: v for k, v in out.items() if v}


def row_split(row: Mapping[str, str]) -> str:
    """A row's split; a row without one is a training row."""
    return row.get("split") or "train"


def rows_of_split(rows: Iterable[Mapping[str, str]], split: str | None) -> list:
    """The rows of ``split`` (:func:`row_split`); ``None`` takes all rows."""
    return [r for r in rows if split is None or row_split(r) == split]


def load_imagefolder(
    folder: str | Path,
    *,
    resolution: int,
    split: str | None = "train",
    languages: tuple[str, ...] | None = None,
    limit: int | None = None,
) -> CaptionedImages:
    """Rows of ``split``; rows without a split value count as "train"; split=None takes all."""
    import torch

    folder = Path(folder)
    rows = rows_of_split(read_metadata(folder), split)
    if limit:
        rows = rows[:limit]
    if not rows:
        raise InvalidRequestError(f"{folder}: no rows to train on (split={split!r})")
    imgs = np.empty((len(rows), resolution, resolution, 3), dtype=np.uint8)
    captions: list[dict[str, str]] = []
    flips = []
    for i, row in enumerate(rows):
        im = to_rgb(load_image_file(folder / row["file_name"], limits=DATASET_LIMITS, what="training picture"))
        if im.size != (resolution, resolution):
            im = im.resize((resolution, resolution), Image.LANCZOS)
        imgs[i] = np.asarray(im)
        # "en" always comes first, even empty: an empty caption trains the unconditional case.
        caps = select_languages({"en": row["text"]} | row_captions(row), languages)
        captions.append(caps)
        flips.append(not _NO_FLIP.search(caps.get("en", "")))
    return CaptionedImages(
        images=torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(),
        captions=captions,
        flippable=torch.tensor(flips),
        file_names=[r["file_name"] for r in rows],
    )


def select_languages(captions: dict[str, str], languages: tuple[str, ...] | None) -> dict[str, str]:
    """A row's captions in ``languages`` only; the English one where it has none of them."""
    if not languages:
        return captions
    chosen = {k: v for k, v in captions.items() if k in languages}
    return chosen or ({"en": captions["en"]} if "en" in captions else captions)

