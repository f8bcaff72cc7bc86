"""The describer interface: :class:`Description`, :class:`Describer`, the image helpers
the backends share, and :func:`describer`, which picks a backend from a spec string.

The backends are imported only when :func:`describer` builds one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from PIL import Image

from bildwerk.core.errors import InvalidImageError, InvalidRequestError
from bildwerk.images.io import decode_image, to_rgb

ImageInput = Image.Image | bytes

# Captioning gains nothing from more pixels than this, and uploads stay small.
MAX_SIDE = 1024
DESCRIBER_CHOICES = ("local", "openai", "openai:MODEL", "azure")


@dataclass
class Description:
    """What a describer saw: a caption plus, where the backend gives them, scored labels."""

    text: str
    backend: str
    confidence: float | None
    labels: list[tuple[str, float]] = field(default_factory=list)


@runtime_checkable
class Describer(Protocol):
    """Turns one image into a :class:`Description`."""

    name: str

    def describe(self, image: ImageInput) -> Description:
        """Describe a decoded image (or the raw bytes of a PNG/JPEG/WebP file)."""
        ...


# --------------------------------------------------------------------------- helpers


def _as_image(image: ImageInput | bytearray | memoryview) -> Image.Image:
    """A PIL image from an image or untrusted bytes (decoded within bildwerk's limits)."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, bytes | bytearray | memoryview):
        return decode_image(bytes(image))
    raise InvalidImageError(f"expected a PIL image or image bytes, got {type(image).__name__}")


def _fit(image: Image.Image, max_side: int = MAX_SIDE, min_side: int = 1) -> Image.Image:
    """RGB on white, downscaled so the long side is <= max_side, upscaled to min_side."""
    rgb = to_rgb(image)
    w, h = rgb.size
    scale = 1.0
    if max(w, h) > max_side:
        scale = max_side / max(w, h)
    elif min(w, h) < min_side:
        scale = min_side / min(w, h)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return rgb


# --------------------------------------------------------------------------- choosing


def describer(spec: str | None = None) -> Describer:
    """A describer from a spec: "local" (default), "openai", "openai:MODEL" or "azure".

    Without a spec, ``BILDWERK_DESCRIBER`` decides, then "local".
    """
    raw = (spec or os.environ.get("BILDWERK_DESCRIBER") or "local").strip()
    kind, _, arg = raw.partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind == "local" and not arg:
        from bildwerk.prompts.describe.local import LocalDescriber

        return LocalDescriber()
    if kind == "openai":
        from bildwerk.prompts.describe.openai_vision import OpenAIVisionDescriber

        return OpenAIVisionDescriber(model=arg or None)
    if kind == "azure" and not arg:
        from bildwerk.prompts.describe.azure import AzureDescriber

        return AzureDescriber()
    raise InvalidRequestError(
        f"unknown describer {raw!r}; choose one of: {', '.join(DESCRIBER_CHOICES)}"
    )
