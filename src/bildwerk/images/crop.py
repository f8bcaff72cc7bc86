"""Inpainting of the masked area only: crop it with context, work at model size, paste back.

Small edits in a large photo come out far better when the model sees the area
around the mask at its native resolution instead of the whole picture squeezed
into 512x512. Pasting back composites through an alpha that is 0 outside the
user's mask, so untouched pixels come back bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from bildwerk.core.errors import InvalidImageError
from bildwerk.images.masks import mask_bbox


@dataclass(frozen=True)
class CropBox:
    """A pixel rectangle; right and bottom are exclusive, as in Pillow."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)


def _place(center: float, length: int, lo_need: int, hi_need: int, limit: int) -> int:
    """Start of a span of ``length`` centred on ``center``, inside [0, limit], covering [lo_need, hi_need]."""
    start = math.floor(center - length / 2 + 0.5)
    lowest = max(0, hi_need - length)
    highest = min(lo_need, limit - length)
    return min(max(start, lowest), highest)


def context_box(
    bbox: tuple[int, int, int, int],
    image_size: tuple[int, int],
    *,
    padding: int,
    aspect: float = 1.0,
) -> CropBox:
    """The bbox grown by ``padding``, then widened or heightened to ``aspect`` (w/h).

    Stays centred on the bbox where it can, shifts to stay inside the image, and
    is clamped to the image when the image is too small for the aspect. It always
    contains the bbox plus padding (clamped to the image).
    """
    img_w, img_h = image_size
    left, top, right, bottom = bbox
    if img_w <= 0 or img_h <= 0:
        raise ValueError(f"image size must be positive, got {image_size}")
    if not (0 <= left < right <= img_w and 0 <= top < bottom <= img_h):
        raise ValueError(f"bbox {bbox} is empty or outside the {img_w}x{img_h} image")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if not (aspect > 0 and math.isfinite(aspect)):
        raise ValueError(f"aspect must be a positive number, got {aspect}")

    # The minimum box: bbox + padding, clamped to the image.
    need_l, need_t = max(0, left - padding), max(0, top - padding)
    need_r, need_b = min(img_w, right + padding), min(img_h, bottom + padding)
    width, height = need_r - need_l, need_b - need_t

    # Grow the shorter side to reach the aspect; never shrink.
    if width < height * aspect:
        width = math.ceil(height * aspect - 1e-9)
    else:
        height = math.ceil(width / aspect - 1e-9)
    width, height = min(width, img_w), min(height, img_h)

    x = _place((left + right) / 2, width, need_l, need_r, img_w)
    y = _place((top + bottom) / 2, height, need_t, need_b, img_h)
    return CropBox(x, y, x + width, y + height)


@dataclass
class InpaintCrop:
    """The crop to send to the model: where it came from, and image + mask at work size."""

    box: CropBox
    image: Image.Image
    mask: Image.Image


def _resize(img: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    return img.copy() if img.size == tuple(size) else img.resize(size, resample)


def crop_for_inpaint(
    image: Image.Image, mask: Image.Image, *, padding: int, work_size: tuple[int, int]
) -> InpaintCrop:
    """Crop the mask's area plus ``padding`` of context at the work aspect, resized to ``work_size``.

    The work mask is resized by area (BOX) and then any covered pixel counts as
    "change", so thin strokes survive downscaling instead of vanishing.
    """
    if mask.size != image.size:
        raise InvalidImageError(
            f"The mask is {mask.size[0]}x{mask.size[1]} but the image is "
            f"{image.size[0]}x{image.size[1]}; they must match."
        )
    work_w, work_h = work_size
    if work_w <= 0 or work_h <= 0:
        raise ValueError(f"work size must be positive, got {work_size}")
    bbox = mask_bbox(mask)
    if bbox is None:
        raise InvalidImageError(
            "The mask marks nothing to repaint; paint the area to change in white "
            "(or make it transparent) and try again."
        )
    box = context_box(bbox, image.size, padding=padding, aspect=work_w / work_h)
    work_image = _resize(image.crop(box.as_tuple()), work_size, Image.Resampling.LANCZOS)
    work_mask = _resize(mask.crop(box.as_tuple()).convert("L"), work_size, Image.Resampling.BOX)
    work_mask = work_mask.point(lambda v: 255 if v > 0 else 0)
    return InpaintCrop(box=box, image=work_image, mask=work_mask)


def _check_alpha(alpha: Image.Image, size: tuple[int, int]) -> Image.Image:
    if alpha.mode not in ("L", "1"):
        raise ValueError(f"alpha must be an 'L' image, got mode {alpha.mode!r}")
    if alpha.size != size:
        raise ValueError(f"alpha is {alpha.size} but the image is {size}")
    return alpha if alpha.mode == "L" else alpha.convert("L")


def paste_back(
    original: Image.Image, generated: Image.Image, box: CropBox, alpha: Image.Image
) -> Image.Image:
    """Composite the model's output for ``box`` over ``original`` through ``alpha``.

    ``alpha`` is full-image "L" (0 = keep original). Pillow's composite is exact at
    0 and 255, so wherever alpha is 0 the result is bit-identical to ``original``.
    Returns a new image in ``original``'s mode.
    """
    alpha = _check_alpha(alpha, original.size)
    img_w, img_h = original.size
    if not (0 <= box.left < box.right <= img_w and 0 <= box.top < box.bottom <= img_h):
        raise ValueError(f"crop box {box.as_tuple()} is outside the {img_w}x{img_h} image")
    reach = alpha.getbbox()
    if reach is not None and not (
        box.left <= reach[0]
        and box.top <= reach[1]
        and reach[2] <= box.right
        and reach[3] <= box.bottom
    ):
        # Pixels there would silently stay original; that is a caller bug.
        raise ValueError(f"alpha reaches {reach}, outside the crop box {box.as_tuple()}")

    gen = generated if generated.mode == original.mode else generated.convert(original.mode)
    gen = _resize(gen, (box.width, box.height), Image.Resampling.LANCZOS)
    region = box.as_tuple()
    merged = Image.composite(gen, original.crop(region), alpha.crop(region))
    out = original.copy()
    out.paste(merged, (box.left, box.top))
    return out


def composite_full(
    original: Image.Image, generated: Image.Image, alpha: Image.Image
) -> Image.Image:
    """Whole-image version of :func:`paste_back` (generated is resized to fit if needed)."""
    w, h = original.size
    return paste_back(original, generated, CropBox(0, 0, w, h), alpha)
