"""Load an imagefolder (images + metadata.csv) into memory for training.

The format is the one users already have: ``metadata.csv`` with ``file_name`` and
``text``; extra caption columns ``text_<lang>`` (``text_de``, ``text_ko``...) give
the same picture in other languages, and an optional ``split`` column keeps
held-out rows out of training. Small clip-art datasets fit in memory, which keeps
a CPU epoch free of decoding work.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bildwerk.errors import InvalidRequestError
from bildwerk.images.io import DATASET_LIMITS, load_image_file, to_rgb

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
        langs: set[str] = set()
        for c in self.captions:
            langs.update(c)
        return sorted(langs)


def read_metadata(folder: Path) -> list[dict[str, str]]:
    path = folder / "metadata.csv"
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_imagefolder(
    folder: str | Path,
    *,
    resolution: int,
    split: str | None = "train",
    languages: tuple[str, ...] | None = None,
    limit: int | None = None,
) -> CaptionedImages:
    """Rows of ``split``; rows without a split value count as "train"; split=None takes all."""
    folder = Path(folder)
    rows = read_metadata(folder)
    if split is not None:
        rows = [r for r in rows if (r.get("split") or "train") == split]
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
        caps = {"en": row["text"].strip()}
        for key, value in row.items():
            if key and key.startswith("text_") and value and value.strip():
                caps[key.removeprefix("text_")] = value.strip()
        caps = select_languages(caps, languages)
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

