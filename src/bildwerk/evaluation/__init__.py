"""Quality evaluation with an outside judge (an ImageNet classifier).

``imagenet_map`` (caption -> ImageNet classes) needs nothing heavy; ``judge`` and
``quality`` load torch and are imported on first use.
"""

from __future__ import annotations

from typing import Any

from bildwerk.evaluation.imagenet_map import (
    CaptionMatch,
    EvalRow,
    class_label,
    map_caption,
    match_caption,
    select_rows,
)

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
        from bildwerk.evaluation.judge import Judge

        return Judge
    if name in ("evaluate", "QualityReport"):
        from bildwerk.evaluation import quality

        return getattr(quality, name)
    raise AttributeError(name)
