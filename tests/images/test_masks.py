"""Mask conventions, dilation and the inner feather."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from bildwerk.core.errors import InvalidImageError
from bildwerk.images import (
    dilate_mask,
    feather_mask,
    mask_bbox,
    mask_is_empty,
    normalize_mask,
)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def _square_l(size: tuple[int, int] = (20, 10), box=(4, 2, 9, 6), value: int = 255) -> Image.Image:
    img = Image.new("L", size, 0)
    img.paste(value, box)
    return img


def _assert_binary(mask: Image.Image) -> None:
    assert mask.mode == "L"
    assert set(np.unique(_arr(mask))) <= {0, 255}


# --- normalize_mask ------------------------------------------------------------------


def test_luminance_white_means_change() -> None:
    out = normalize_mask(_square_l(), source="luminance")
    _assert_binary(out)
    assert mask_bbox(out) == (4, 2, 9, 6)


def test_rgb_black_and_white_mask() -> None:
    img = Image.new("RGB", (10, 10), (0, 0, 0))
    img.paste((255, 255, 255), (1, 1, 3, 3))
    out = normalize_mask(img)  # auto, no alpha -> luminance
    assert mask_bbox(out) == (1, 1, 3, 3)


def test_alpha_transparent_means_change() -> None:
    # OpenAI-style: the image itself, with the area to edit erased.
    img = Image.new("RGBA", (10, 10), (30, 60, 90, 255))
    img.paste((30, 60, 90, 0), (5, 5, 8, 9))
    for source in ("alpha", "auto"):
        out = normalize_mask(img, source=source)
        _assert_binary(out)
        assert mask_bbox(out) == (5, 5, 8, 9)
        assert _arr(out).sum() == 255 * 3 * 4


def test_auto_uses_luminance_when_alpha_is_fully_opaque() -> None:
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 255))
    img.paste((255, 255, 255, 255), (2, 3, 4, 5))
    out = normalize_mask(img, source="auto")
    assert mask_bbox(out) == (2, 3, 4, 5)


def test_alpha_requested_but_missing() -> None:
    with pytest.raises(InvalidImageError, match="no alpha channel"):
        normalize_mask(_square_l(), source="alpha")


def test_luminance_ignores_invisible_pixels() -> None:
    # White strokes painted on a transparent *white* canvas: only the strokes change.
    img = Image.new("RGBA", (10, 10), (255, 255, 255, 0))
    img.paste((255, 255, 255, 255), (1, 2, 3, 4))
    assert mask_bbox(normalize_mask(img, source="luminance")) == (1, 2, 3, 4)


def test_palette_mask_with_transparency_uses_alpha() -> None:
    pal = Image.new("P", (6, 6), 0)
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * (256 * 3 - 6))
    pal.putpixel((4, 4), 1)
    pal.info["transparency"] = 1
    assert mask_bbox(normalize_mask(pal)) == (4, 4, 5, 5)


def test_invert_flips_after_the_convention() -> None:
    out = normalize_mask(_square_l((6, 6), (0, 0, 3, 6)), invert=True)
    assert mask_bbox(out) == (3, 0, 6, 6)
    img = Image.new("RGBA", (6, 6), (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), (0, 0, 6, 2))
    assert mask_bbox(normalize_mask(img, source="alpha", invert=True)) == (0, 2, 6, 6)


def test_threshold() -> None:
    gray = _square_l(value=100)
    assert mask_is_empty(normalize_mask(gray))
    assert mask_bbox(normalize_mask(gray, threshold=50)) == (4, 2, 9, 6)


def test_size_mismatch_message() -> None:
    with pytest.raises(InvalidImageError, match="mask is 20x10 but the image is 30x10"):
        normalize_mask(_square_l(), size=(30, 10))
    assert normalize_mask(_square_l(), size=(20, 10)).size == (20, 10)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        normalize_mask(_square_l(), source="bright")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        normalize_mask(_square_l(), threshold=255)


def test_16bit_mask_is_not_all_white() -> None:
    arr = np.zeros((8, 8), dtype=np.uint16)
    arr[2:4, 2:4] = 65535
    arr[5, 5] = 200  # dark in 16 bit, would clip to white with a naive convert
    out = normalize_mask(Image.fromarray(arr))
    assert mask_bbox(out) == (2, 2, 4, 4)


# --- empty / bbox ----------------------------------------------------------------------


def test_empty_and_bbox() -> None:
    empty = Image.new("L", (5, 5), 0)
    assert mask_is_empty(empty) and mask_bbox(empty) is None
    one = empty.copy()
    one.putpixel((3, 1), 255)
    assert not mask_is_empty(one)
    assert mask_bbox(one) == (3, 1, 4, 2)


def test_helpers_reject_unnormalized_masks() -> None:
    with pytest.raises(ValueError, match="normalize_mask"):
        mask_is_empty(Image.new("RGBA", (2, 2)))


# --- dilate ---------------------------------------------------------------------------


def test_dilate_single_pixel_is_a_disk() -> None:
    m = Image.new("L", (21, 21), 0)
    m.putpixel((10, 10), 255)
    out = dilate_mask(m, 4)
    _assert_binary(out)
    yy, xx = np.mgrid[:21, :21]
    disk = (yy - 10) ** 2 + (xx - 10) ** 2 <= 16
    assert np.array_equal(_arr(out) > 0, disk)


def test_dilate_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    src = rng.random((37, 53)) < 0.02
    src[0, 0] = src[-1, -1] = True  # corners: border handling
    radius = 5
    got = _arr(dilate_mask(Image.fromarray(src.astype(np.uint8) * 255), radius)) > 0
    yy, xx = np.mgrid[: src.shape[0], : src.shape[1]]
    want = np.zeros_like(src)
    for y, x in zip(*np.nonzero(src), strict=True):
        want |= (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius
    assert np.array_equal(got, want)


def test_dilate_zero_and_empty() -> None:
    m = _square_l()
    assert np.array_equal(_arr(dilate_mask(m, 0)), _arr(m))
    assert mask_is_empty(dilate_mask(Image.new("L", (9, 9), 0), 5))
    with pytest.raises(ValueError):
        dilate_mask(m, -1)


def test_dilate_large_mask_is_fast() -> None:
    m = Image.new("L", (2048, 2048), 0)
    m.paste(255, (300, 200, 1700, 1800))
    start = time.perf_counter()
    out = dilate_mask(m, 32)
    elapsed = time.perf_counter() - start
    assert mask_bbox(out) == (268, 168, 1732, 1832)
    assert elapsed < 3.0  # ~0.2 s normally; generous for slow CI machines


# --- feather --------------------------------------------------------------------------


def _big_square() -> Image.Image:
    return _square_l((80, 60), (20, 10, 60, 50))


def test_feather_is_exactly_zero_outside_the_mask() -> None:
    m = _big_square()
    out = feather_mask(m, 8)
    assert out.mode == "L" and out.size == m.size
    assert not _arr(out)[_arr(m) == 0].any()


def test_feather_reaches_full_inside_and_ramps_at_the_edge() -> None:
    out = _arr(feather_mask(_big_square(), 8)).astype(int)
    assert out[30, 40] == 255  # centre, 20 px from any edge
    assert out[30, 27] == 255  # distance 8 (= radius) to the kept column 19
    row = out[30, 15:41]  # crosses the left edge at x=20
    assert np.all(np.diff(row) >= 0)  # monotone from outside to inside
    assert row[0] == 0 and 0 < out[30, 20] < 40  # edge pixel: small but not a hard step
    assert 80 < out[30, 24] < 200  # halfway in: mid-grey
    steps = np.diff(out[30, 19:30])
    assert steps.max() < 70  # no visible jump anywhere along the ramp


def test_feather_zero_radius_is_binary() -> None:
    m = _big_square()
    assert np.array_equal(_arr(feather_mask(m, 0)), _arr(m))


def test_feather_does_not_ramp_at_the_image_border() -> None:
    m = Image.new("L", (40, 40), 0)
    m.paste(255, (0, 0, 40, 20))  # top half; only the bottom edge is a real edge
    out = _arr(feather_mask(m, 6))
    assert out[0, 0] == 255 and out[0, 20] == 255  # border row untouched
    assert out[19, 20] < out[14, 20] == 255  # ramp only near y=20
    assert not out[20:].any()


def test_feather_keeps_holes_exact() -> None:
    m = _big_square()
    m.paste(0, (38, 28, 42, 32))  # a hole the user wants kept
    out = _arr(feather_mask(m, 6))
    assert not out[28:32, 38:42].any()
    assert out[30, 37] < 100  # ramps down towards the hole
