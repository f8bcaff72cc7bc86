"""ControlNet preprocessors that need no downloaded model: control maps from pictures.

ControlNets read a control map: white lines on black for the edge and scribble kinds.
Everything here is deterministic (the same picture gives the same map) and runs on the CPU
with OpenCV's Canny, the detector the public canny ControlNets were trained on.

* ``canny``: edges of a photo, with the two hysteresis thresholds (0-255);
* ``scribble``: a user's drawing made into white strokes on black whichever way it was drawn
  (black pen on white paper is inverted), thresholded to clean strokes and widened a little
  as the scribble networks expect bold lines;
* ``lineart``: thin lines from a photo (Canny edges closed into strokes), for lineart and
  scribble networks when no drawing is at hand;
* ``none``: the picture already is a control map; it is only made RGB.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from bildwerk.core.control import PREPROCESSORS, ControlUnit
from bildwerk.core.errors import InvalidRequestError
from bildwerk.images.io import to_rgb


def _gray(image: Image.Image) -> np.ndarray:
    return np.asarray(to_rgb(image).convert("L"), dtype=np.uint8)


def _rgb(lines: np.ndarray) -> Image.Image:
    return Image.fromarray(lines.astype(np.uint8), mode="L").convert("RGB")


def canny(image: Image.Image, low: int = 100, high: int = 200) -> Image.Image:
    """Canny edges, white on black (RGB)."""
    import cv2

    return _rgb(cv2.Canny(_gray(image), int(low), int(high)))


def scribble(image: Image.Image) -> Image.Image:
    """A drawing as white strokes on black. Which side is ink is read from the picture: the
    majority of pixels is the paper, so black-on-white drawings are inverted."""
    import cv2

    gray = _gray(image)
    ink_dark = float(gray.mean()) > 127.0  # mostly light: dark strokes on light paper
    strokes = (gray < 128) if ink_dark else (gray >= 128)
    lines = strokes.astype(np.uint8) * 255
    # Scribble networks saw bold strokes: widen thin pen lines by a pixel each side.
    return _rgb(cv2.dilate(lines, np.ones((3, 3), np.uint8), iterations=1))


def lineart(image: Image.Image, low: int = 100, high: int = 200) -> Image.Image:
    """Lines from a photo: Canny edges closed into continuous strokes."""
    import cv2

    edges = cv2.Canny(_gray(image), int(low), int(high))
    closed = cv2.morphologyEx(edges, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    return _rgb(closed)


def preprocess(image: Image.Image, preprocessor: str, *, low: int = 100, high: int = 200) -> Image.Image:
    """The control map ``preprocessor`` makes of ``image`` (RGB, the image's size)."""
    if preprocessor == "none":
        return to_rgb(image)
    if preprocessor == "canny":
        return canny(image, low, high)
    if preprocessor == "scribble":
        return scribble(image)
    if preprocessor == "lineart":
        return lineart(image, low, high)
    raise InvalidRequestError(f"unknown ControlNet preprocessor {preprocessor!r}; use one of "
                              f"{', '.join(PREPROCESSORS)}")


def control_map(unit: ControlUnit, size: tuple[int, int], *,
                crop: tuple[int, int, int, int] | None = None,
                frame: tuple[int, int] | None = None) -> Image.Image:
    """A unit's control picture at the working ``size``, through its preprocessor.

    ``crop``: inpainting only the masked region works on a box of the input picture (``frame``
    its size); the control picture is brought to the input's size and cut with the same box, so
    it lines up with what is repainted. Resized before preprocessing (Lanczos), so edges are
    found at the resolution the network reads them."""
    assert unit.image is not None
    image = to_rgb(unit.image)
    if crop is not None:
        if frame is not None and image.size != frame:
            image = image.resize(frame, Image.LANCZOS)
        image = image.crop(crop)
    if image.size != size:
        image = image.resize(size, Image.LANCZOS)
    return preprocess(image, unit.preprocessor, low=unit.low_threshold, high=unit.high_threshold)


def to_control_tensor(image: Image.Image):
    """A control map as ControlNets read it: (1, 3, H, W) float32 in [0, 1]."""
    import torch

    arr = np.asarray(to_rgb(image), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()
