"""Image normalisation (white background, centred square, fixed size) and image hashes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bildwerk.core.hashing import image_sha256
from bildwerk.images.io import DATASET_LIMITS, has_transparency, load_image_file, to_rgb

from .svg import render_svg

WHITE = (255, 255, 255)
# Channel value above which a pixel counts as background when trimming borders.
BACKGROUND_LEVEL = 250
# Empty border, as a fraction of the side, kept around the trimmed picture.
DEFAULT_MARGIN = 0.04
# Pixel budget against decompression bombs (DATASET_LIMITS, which explains it).
MAX_PIXELS = DATASET_LIMITS.max_pixels
# Above this, shrink right after decoding so later copies stay small.
_REDUCE_ABOVE = 16_000_000


def _crop_to(img: Image.Image, mask: np.ndarray) -> Image.Image:
    if not mask.any():
        return img  # blank: nothing to crop to
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return img.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))


def trim_background(img: Image.Image, level: int = BACKGROUND_LEVEL) -> Image.Image:
    """Crop away empty borders, so pictures fill the frame alike; returns RGB on white.

    Transparent borders go first. Near-white borders go only when the picture is framed
    by white on all four sides (an opaque white background): a white edge that belongs
    to the picture, like the top half of the Polish flag, stays.
    """
    if img.mode == "RGBA":
        img = _crop_to(img, np.asarray(img.getchannel("A")) > 8)
    rgb_img = to_rgb(img)
    rgb = np.asarray(rgb_img)
    drawn = rgb.min(axis=2) < level
    if drawn.any() and not (drawn[0].any() or drawn[-1].any() or drawn[:, 0].any() or drawn[:, -1].any()):
        rgb_img = _crop_to(rgb_img, drawn)
    return rgb_img


def pad_to_square(img: Image.Image, margin: float = 0.0) -> Image.Image:
    """Centre on a white square whose side is the longer side plus ``margin`` each way."""
    w, h = img.size
    side = max(w, h)
    side = max(1, round(side * (1 + 2 * margin)))
    canvas = Image.new("RGB", (side, side), WHITE)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def is_blank(img: Image.Image, level: int = BACKGROUND_LEVEL) -> bool:
    """True when nothing would show on white (white-on-transparent art, empty files)."""
    return bool(np.asarray(img.convert("RGB")).min() >= level)


def normalize_image(
    img: Image.Image, size: int = 128, *, trim: bool = True, margin: float = DEFAULT_MARGIN
) -> Image.Image:
    """White background, centred square, ``size`` x ``size`` RGB (LANCZOS)."""
    if trim:
        rgb = trim_background(img.convert("RGBA") if has_transparency(img) else to_rgb(img))
    else:
        rgb = to_rgb(img)
    square = pad_to_square(rgb, margin if trim else 0.0)
    if square.size != (size, size):
        # reducing_gap: box-shrink big pictures first; same look, several times faster
        square = square.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return square


def load_raw_image(path: Path, *, svg_binary: str | None = None, svg_box: int = 512) -> Image.Image:
    """Decode a PNG/JPEG/... with :func:`~bildwerk.images.io.load_image_file` (the toolkit's
    one decoder, with :data:`~bildwerk.images.io.DATASET_LIMITS`), or an SVG through rsvg-convert."""
    if path.suffix.lower() == ".svg":
        if svg_binary is None:
            raise ValueError("no SVG renderer available (rsvg-convert)")
        return render_svg(path, svg_binary, svg_box)
    # Pillow's own bomb check would stop at ~89 Mpx; the dataset budget is checked instead.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)
    img = load_image_file(path, limits=DATASET_LIMITS, what="picture")
    pixels = img.width * img.height
    if pixels > _REDUCE_ABOVE:
        factor = max(1, int((pixels / _REDUCE_ABOVE) ** 0.5))
        return img.reduce(factor)
    return img


# --- hashes -------------------------------------------------------------------------


def content_hash(img: Image.Image) -> str:
    """SHA-256 of the pixels (not the file): identical normalised images, same hash."""
    return image_sha256(img)


def _bits_to_int(bits: np.ndarray) -> int:
    value = 0
    for bit in bits.ravel():
        value = (value << 1) | int(bit)
    return value


def gray_thumbnail(img: Image.Image, side: int = 16) -> np.ndarray:
    """``side`` x ``side`` greyscale thumbnail (box filter: robust to resampling noise)."""
    return np.asarray(img.convert("L").resize((side, side), Image.Resampling.BOX), dtype=np.float64)


def average_hash(thumb: np.ndarray) -> int:
    """64-bit average hash: 16x16 thumbnail pooled 2x2 to 8x8, each cell above the mean."""
    cells = thumb.reshape(8, thumb.shape[0] // 8, 8, thumb.shape[1] // 8).mean(axis=(1, 3))
    return _bits_to_int(cells > cells.mean())


def difference_hash(thumb: np.ndarray) -> int:
    """64-bit difference hash: 8 rows x 8 horizontal gradients of a 16x16 thumbnail.

    Rows are pooled in pairs and columns compared at stride 2 (0 vs 2, 2 vs 4, ...,
    14 vs 15), so the hash reacts to shape edges rather than to single-pixel noise.
    """
    rows = thumb.reshape(8, 2, thumb.shape[1]).mean(axis=1)
    cols = [*range(0, 16, 2), 15]
    grid = rows[:, cols]
    return _bits_to_int(grid[:, 1:] > grid[:, :-1])


def detail_thumbnail(img: Image.Image, side: int = 32) -> np.ndarray:
    """``side`` x ``side`` RGB box-filtered thumbnail, to confirm a hash match.

    Greyscale hashes cannot tell a red jigsaw piece from a green one, nor a clock at
    three from one at four; every 4x4 block of two true duplicates has about the same
    colour, which this thumbnail checks.
    """
    return np.asarray(img.convert("RGB").resize((side, side), Image.Resampling.BOX), dtype=np.uint8)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class ImageFingerprint:
    sha256: str
    ahash: int
    dhash: int
    thumb: bytes  # 32x32x3 uint8 (detail_thumbnail), as bytes so it pickles small


def fingerprint(img: Image.Image) -> ImageFingerprint:
    thumb = gray_thumbnail(img)
    return ImageFingerprint(
        sha256=content_hash(img),
        ahash=average_hash(thumb),
        dhash=difference_hash(thumb),
        thumb=detail_thumbnail(img).tobytes(),
    )
