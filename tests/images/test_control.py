"""ControlNet preprocessors without downloaded models: deterministic control maps."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from bildwerk.core.control import ControlUnit
from bildwerk.images.control import control_map, preprocess


def _square() -> Image.Image:
    im = Image.new("RGB", (64, 64), (230, 230, 230))
    ImageDraw.Draw(im).rectangle((16, 16, 47, 47), fill=(20, 20, 20))
    return im


def test_canny_finds_the_border_only_and_is_deterministic():
    edges = np.asarray(preprocess(_square(), "canny"))
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    assert edges[14:18, 32].max() == 255 and edges[32, 32].max() == 0 and edges[2, 2].max() == 0
    assert np.array_equal(edges, np.asarray(preprocess(_square(), "canny")))
    # Thresholds matter: a faint square is found with low thresholds only.
    faint = Image.new("RGB", (64, 64), (120, 120, 120))
    ImageDraw.Draw(faint).rectangle((16, 16, 47, 47), fill=(135, 135, 135))
    assert np.asarray(preprocess(faint, "canny", low=10, high=20)).max() == 255
    assert np.asarray(preprocess(faint, "canny", low=200, high=250)).max() == 0


def test_scribble_is_white_strokes_on_black_whichever_way_drawn():
    drawing = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(drawing).line((5, 32, 58, 32), fill="black", width=2)
    a = np.asarray(preprocess(drawing, "scribble"))
    b = np.asarray(preprocess(ImageOps.invert(drawing), "scribble"))
    assert np.array_equal(a, b)
    assert a[32, 30].max() == 255 and a[5, 5].max() == 0
    assert (a[:, 30, 0] > 0).sum() > 2  # widened beyond the 2-pixel pen


def test_lineart_and_the_working_size_and_crop():
    lines = np.asarray(preprocess(_square(), "lineart"))
    assert lines[14:18, 32].max() == 255 and lines[32, 32].max() == 0
    unit = ControlUnit(model="x", image=_square(), preprocessor="canny")
    assert control_map(unit, (128, 96)).size == (128, 96)
    # Inpainting's crop: the picture cut with the same box, then brought to the working size.
    cropped = np.asarray(control_map(unit, (64, 64), crop=(0, 0, 32, 32), frame=(64, 64)))
    assert cropped[60, 60].max() == 0 and cropped[28:36, 40].max() == 255  # the corner at the crop's centre
