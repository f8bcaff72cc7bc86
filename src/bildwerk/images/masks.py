"""Inpainting masks: one internal convention, whatever the caller sent.

Internally a mask is an "L" image where 255 means "repaint this pixel" and 0 means
"keep it". Callers send either a luminance mask (white = repaint, the AUTOMATIC1111
convention) or an alpha mask (transparent = repaint, the OpenAI images/edits
convention); :func:`normalize_mask` turns both into the internal form.

The helpers below treat any nonzero pixel as "change", which is the same rule
``Image.getbbox`` uses.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
from PIL import Image

from bildwerk.core.errors import InvalidImageError
from bildwerk.core.request import MaskSource
from bildwerk.images.io import _has_alpha, _normalize_mode

_MASK_SOURCES: tuple[str, ...] = get_args(MaskSource)


def _alpha_channel(img: Image.Image) -> Image.Image:
    return img.convert("RGBA").getchannel("A")


def normalize_mask(
    mask: Image.Image,
    *,
    size: tuple[int, int] | None = None,
    source: MaskSource = "auto",
    invert: bool = False,
    threshold: int = 127,
) -> Image.Image:
    """Turn a user mask into a binary "L" mask (255 = change, 0 = keep).

    ``source`` picks the convention: "luminance" (bright = change), "alpha"
    (transparent = change) or "auto" (alpha if the mask uses its alpha channel at
    all, luminance otherwise). Pixels whose change-value is above ``threshold``
    become 255.
    """
    if source not in _MASK_SOURCES:
        raise ValueError(f"mask source must be one of {_MASK_SOURCES}, got {source!r}")
    if not 0 <= threshold <= 254:
        raise ValueError(f"mask threshold must be in 0..254, got {threshold}")
    if size is not None and tuple(mask.size) != tuple(size):
        mw, mh = mask.size
        iw, ih = size
        raise InvalidImageError(
            f"The mask is {mw}x{mh} but the image is {iw}x{ih}; they must match. "
            "Resize the mask to the image's size."
        )

    has_alpha = _has_alpha(mask)
    if source == "alpha" and not has_alpha:
        raise InvalidImageError(
            "The mask has no alpha channel, so it cannot mark areas by transparency. "
            "Send a PNG with transparent areas to repaint, or use a black-and-white "
            "mask (white = repaint)."
        )
    use_alpha = source == "alpha" or (
        source == "auto" and has_alpha and _alpha_channel(mask).getextrema()[0] < 255
    )

    if use_alpha:
        # Transparent = change, so the change-value is the inverted alpha.
        value = 255 - np.asarray(_alpha_channel(mask), dtype=np.int32)
    else:
        value = np.asarray(_normalize_mode(mask).convert("L"), dtype=np.int32)
        if has_alpha:
            # An invisible pixel is not "white": strokes painted on a transparent
            # canvas mark the change, the empty canvas does not.
            alpha = np.asarray(_alpha_channel(mask), dtype=np.int32)
            value = (value * alpha + 127) // 255

    changed = value > threshold
    if invert:
        changed = ~changed
    return _from_bool(changed)


def _from_bool(changed: np.ndarray) -> Image.Image:
    return Image.fromarray(changed.astype(np.uint8) * np.uint8(255), mode="L")


def _changed(mask: Image.Image) -> np.ndarray:
    """Boolean "change" array of an internal mask ("L" or "1")."""
    if mask.mode not in ("L", "1"):
        raise ValueError(
            f"expected an 'L' mask (255 = change), got mode {mask.mode!r}; "
            "run normalize_mask() on user masks first"
        )
    return np.asarray(mask.convert("L")) > 0


def _as_l(mask: Image.Image) -> Image.Image:
    if mask.mode not in ("L", "1"):
        _changed(mask)  # raises the explanatory error
    return mask if mask.mode == "L" else mask.convert("L")


def mask_is_empty(mask: Image.Image) -> bool:
    """True when the mask marks no pixel to change."""
    return _as_l(mask).getextrema()[1] == 0


def mask_bbox(mask: Image.Image) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the changed area, right/bottom exclusive; None if empty."""
    box = _as_l(mask).getbbox()
    return None if box is None else (int(box[0]), int(box[1]), int(box[2]), int(box[3]))


def _grow_box(
    box: tuple[int, int, int, int], by: int, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    w, h = size
    return max(0, left - by), max(0, top - by), min(w, right + by), min(h, bottom + by)


def _distance_sq_to_outside(inside: np.ndarray, cap: int) -> np.ndarray:
    """Squared Euclidean distance from each ``inside`` pixel to the nearest other pixel.

    Exact up to ``cap``; anything farther reads as ``(cap + 1) ** 2``. Pixels beyond
    the array border count as inside, so a region touching the border is not
    treated as having an edge there. Separable: an exact 1-D distance along rows,
    then a min over vertical offsets up to ``cap`` (cheap because ``cap`` is small).
    """
    h, w = inside.shape
    far = cap + 1
    far_sq = far * far
    # Small caps fit uint16 (far_sq + cap**2 < 65536), halving memory traffic.
    dtype = np.uint16 if 2 * far_sq < 65536 else np.int64

    idx = np.arange(w, dtype=np.int64)
    big = np.int64(w + far + 1)
    last = np.where(inside, -big, idx)
    np.maximum.accumulate(last, axis=1, out=last)
    nxt = np.where(inside, w + big, idx)
    nxt = np.minimum.accumulate(nxt[:, ::-1], axis=1)[:, ::-1]
    row = np.minimum(idx - last, nxt - idx)
    np.minimum(row, far, out=row)
    row_sq = (row * row).astype(dtype)

    padded = np.full((h + 2 * cap, w), far_sq, dtype=dtype)
    padded[cap : cap + h] = row_sq
    best = row_sq.copy()
    tmp = np.empty_like(best)
    for k in range(1, cap + 1):
        k_sq = dtype(k * k)
        np.add(padded[cap + k : cap + k + h], k_sq, out=tmp)
        np.minimum(best, tmp, out=best)
        np.add(padded[cap - k : cap - k + h], k_sq, out=tmp)
        np.minimum(best, tmp, out=best)
    np.minimum(best, dtype(far_sq), out=best)
    return best


def dilate_mask(mask: Image.Image, radius: int) -> Image.Image:
    """Grow the changed area by ``radius`` pixels (round, Euclidean), returning a binary "L" mask."""
    if radius < 0:
        raise ValueError(f"dilation radius must be >= 0, got {radius}")
    changed = _changed(mask)
    out = np.zeros_like(changed)
    box = mask_bbox(mask)
    if box is None or radius == 0:
        return _from_bool(changed)
    # Only the bbox grown by radius can change, so work on that window alone.
    left, top, right, bottom = _grow_box(box, radius, mask.size)
    win = changed[top:bottom, left:right]
    dist_sq = _distance_sq_to_outside(~win, radius)
    out[top:bottom, left:right] = dist_sq <= radius * radius
    return _from_bool(out)


def feather_mask(mask: Image.Image, radius: int) -> Image.Image:
    """Soft "L" alpha for compositing, feathered inwards only.

    Exactly 0 wherever the mask is 0 (so kept pixels stay bit-identical), 255 at
    ``radius`` px or more inside the mask, and a smoothstep ramp of the Euclidean
    distance to the nearest kept pixel in between. Image borders are not edges.
    """
    if radius < 0:
        raise ValueError(f"feather radius must be >= 0, got {radius}")
    changed = _changed(mask)
    box = mask_bbox(mask)
    if box is None or radius == 0:
        return _from_bool(changed)
    # Every kept pixel within `radius` of a changed one lies in the bbox grown by radius+1.
    left, top, right, bottom = _grow_box(box, radius + 1, mask.size)
    win = changed[top:bottom, left:right]
    dist = np.sqrt(_distance_sq_to_outside(win, radius).astype(np.float32))
    t = np.clip(dist / np.float32(radius), 0.0, 1.0)
    ramp = t * t * (3.0 - 2.0 * t)  # smoothstep: no kink where it meets 0 or 255
    alpha = np.rint(ramp * 255.0).astype(np.uint8)
    alpha[~win] = 0  # already 0 there (distance 0); made explicit because it is the contract
    out = np.zeros(changed.shape, dtype=np.uint8)
    out[top:bottom, left:right] = alpha
    return Image.fromarray(out, mode="L")
