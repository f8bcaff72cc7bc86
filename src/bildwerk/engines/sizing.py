"""Output sizes every engine agrees on (torch-free, so remote engines can share them)."""

from __future__ import annotations

from PIL import Image

from bildwerk.core.request import MAX_SIDE, MIN_SIDE, GenerationRequest


def fit_size(
    width: int, height: int, *, max_side: int = MAX_SIDE, multiple: int = 8
) -> tuple[int, int]:
    """The working size for an input image: within bounds, aspect kept, a multiple of 8."""
    scale = min(1.0, max_side / max(width, height))
    if min(width, height) * scale < MIN_SIDE:
        scale = max(scale, MIN_SIDE / min(width, height))
    w = max(MIN_SIDE, int(width * scale) // multiple * multiple)
    h = max(MIN_SIDE, int(height * scale) // multiple * multiple)
    return min(w, max_side), min(h, max_side)


def input_size(req: GenerationRequest, image: Image.Image) -> tuple[int, int]:
    """The requested width/height where given, else the input image's own size, fitted."""
    fit_w, fit_h = fit_size(*image.size)
    return req.width or fit_w, req.height or fit_h
