"""Quality evaluation with an outside judge (an ImageNet classifier).

The judge and the caption -> ImageNet classes mapping live in
:mod:`bildwerk.models.imagenet`; this package is the harness: ``rows`` (the held-out
rows to judge, nothing heavy), ``quality`` and ``roundtrip`` (torch, imported on
first use).
"""

from __future__ import annotations

from typing import Any

from bildwerk.evaluation.rows import EvalRow, select_rows
from bildwerk.models.imagenet.labels import CaptionMatch, class_label, map_caption, match_caption

__all__ = [
    "CaptionMatch",
    "EvalRow",
    "Judge",
    "QualityReport",
    "class_label",
    "evaluate",
    "map_caption",
    "match_caption",
    "select_rows",
]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package for caption mapping should not import torch.
    if name == "Judge":
        from bildwerk.models.imagenet.classifier import Judge

        return Judge
    if name in ("evaluate", "QualityReport"):
        from bildwerk.evaluation import quality

        return getattr(quality, name)
    raise AttributeError(name)
