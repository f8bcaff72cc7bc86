"""Decoding untrusted image bytes within limits, and PNG encoding with text chunks.

Every image a user sends (upload, base64 in JSON, a file path in a batch file) goes
through :func:`decode_image`, so size limits and error messages live in one place.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from bildwerk.core.errors import InvalidImageError


@dataclass(frozen=True)
class ImageLimits:
    """What an incoming image may be: bytes on the wire, decoded pixels, container formats."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
    # Degenerate pictures cost work out of proportion to their bytes: a 4096x8 upload asks for
    # a 2048x64 generation. A side under min_side or sides further apart than max_aspect : 1
    # are refused, as is more text in the file's chunks than max_text_bytes (Pillow allows 64 MB).
    min_side: int = 8  # one latent pixel
    max_aspect: float | None = 8.0
    max_text_bytes: int | None = 256 * 1024


DEFAULT_LIMITS = ImageLimits()

# Pictures of a local training or evaluation dataset: the files are the user's own, so
# the limits only guard memory. openclipart-png holds a few 10k x 16k posters (~1 GB
# while decoding); anything over 256 Mpx is refused. Pillow's own bomb check still
# applies on top (see decode_image); the dataset builder raises it to this budget.
DATASET_LIMITS = ImageLimits(
    max_bytes=1024 * 1024 * 1024,
    max_pixels=256_000_000,
    formats=("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"),
    min_side=1,
    max_aspect=None,
    max_text_bytes=None,
)

# The media types a data URL may name for each container format (none named is fine too).
_MEDIA_TYPES = {"PNG": ("image/png", "image/apng"), "JPEG": ("image/jpeg", "image/jpg", "image/pjpeg"),
                "WEBP": ("image/webp",), "GIF": ("image/gif",), "BMP": ("image/bmp", "image/x-ms-bmp"),
                "TIFF": ("image/tiff",)}

# Modes the rest of the toolkit works with directly; everything else is converted.
_KEPT_MODES = frozenset({"RGB", "RGBA", "L"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def _formats_text(limits: ImageLimits) -> str:
    return ", ".join(limits.formats)


def _human_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def _check_byte_count(n: int, limits: ImageLimits, what: str) -> None:
    if n <= 0:
        raise InvalidImageError(f"The {what} is empty; send a {_formats_text(limits)} file.")
    if n > limits.max_bytes:
        raise InvalidImageError(
            f"The {what} is {_human_bytes(n)}, more than the limit of "
            f"{_human_bytes(limits.max_bytes)}; send a smaller or more compressed file."
        )


def _check_pixel_count(size: tuple[int, int], limits: ImageLimits, what: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise InvalidImageError(f"The {what} has no pixels ({w}x{h}); send a real image.")
    if w * h > limits.max_pixels:
        raise InvalidImageError(
            f"The {what} is {w}x{h} = {w * h} pixels, more than the limit of "
            f"{limits.max_pixels} pixels; downscale it before sending."
        )


def _check_shape(size: tuple[int, int], limits: ImageLimits, what: str) -> None:
    w, h = size
    if min(w, h) < limits.min_side:
        raise InvalidImageError(
            f"The {what} is {w}x{h} pixels; each side must be at least {limits.min_side} pixels."
        )
    if limits.max_aspect is not None and max(w, h) > limits.max_aspect * min(w, h):
        raise InvalidImageError(
            f"The {what} is {w}x{h} pixels; its sides may differ at most "
            f"{limits.max_aspect:g}:1. Crop it closer to the picture you mean."
        )


def _text_bytes(im: Image.Image) -> int:
    # Text chunks arrive as str; bytes values are ICC profiles and EXIF blocks, which a
    # camera or printer profile may legitimately make large.
    return sum(len(v) for v in im.info.values() if isinstance(v, str))


def _check_text_size(im: Image.Image, limits: ImageLimits, what: str) -> None:
    if limits.max_text_bytes is not None and _text_bytes(im) > limits.max_text_bytes:
        raise InvalidImageError(
            f"The {what} carries more than {_human_bytes(limits.max_text_bytes)} of text "
            "chunks; strip its metadata and send it again."
        )


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    """Map 16/32-bit integer and float grayscale to "L" by range, not by clipping.

    A plain ``convert("L")`` clips 16-bit values at 255, which turns almost any
    16-bit PNG mask into solid white.
    """
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        # Floats in 0..1 are the common convention; otherwise treat them as 0..255.
        if arr.size and float(arr.min()) >= 0.0 and float(arr.max()) <= 1.0:
            arr = arr * 255.0
        out = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    else:
        # "I;16*" is 16-bit by definition; "I" from our formats only comes from 16-bit
        # PNGs too, so both are scaled from 0..65535.
        wide = np.clip(arr.astype(np.int64), 0, 65535)
        out = ((wide * 255 + 32767) // 65535).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def _normalize_mode(img: Image.Image) -> Image.Image:
    """Bring any decoded mode to one of RGB, RGBA or L, keeping alpha where present."""
    mode = img.mode
    if mode in _KEPT_MODES:
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I") or mode == "F":
        return _to_8bit_gray(img)
    if _has_alpha(img):
        return img.convert("RGBA")
    return img.convert("RGB")


def decode_image(
    data: bytes, *, limits: ImageLimits = DEFAULT_LIMITS, what: str = "image"
) -> Image.Image:
    """Decode untrusted bytes into a loaded, upright, detached image in RGB, RGBA or L.

    Byte and pixel limits are checked before any pixel data is decompressed, so a
    small file that declares a huge canvas costs nothing.
    """
    _check_byte_count(len(data), limits, what)
    bad = f"The {what} could not be read as an image; send a valid {_formats_text(limits)} file."
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; make it an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(BytesIO(data), formats=list(limits.formats)) as im:
                _check_pixel_count(im.size, limits, what)
                _check_shape(im.size, limits, what)
                _check_text_size(im, limits, what)
                im.load()
                _check_text_size(im, limits, what)  # chunks after the pixel data
                upright = _upright_copy(im)
        except InvalidImageError:
            raise
        except UnidentifiedImageError as exc:
            raise InvalidImageError(
                f"The {what} is not a {_formats_text(limits)} image (or it is corrupt); "
                "convert it to one of these formats and send it again."
            ) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidImageError(
                f"The {what} declares too many pixels (limit {limits.max_pixels}); "
                "downscale it before sending."
            ) from exc
        except Exception as exc:  # Pillow plugins raise many types on hostile input.
            raise InvalidImageError(f"{bad} ({exc})") from exc
    # _upright_copy() detached the pixels from the file, so this is safe to return.
    return _normalize_mode(upright)


def _upright_copy(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored, not fatal."""
    try:
        upright = ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block should not reject a viewable photo
        upright = None
    return upright if upright is not None else im.copy()


# A URL scheme (RFC 3986) before a ':': what a link or a drive letter starts with.
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def _split_data_url(text: str, what: str, limits: ImageLimits) -> str:
    header, sep, payload = text.partition(",")
    if not sep:
        raise InvalidImageError(
            f"The {what} data URL has no ',' before its data; "
            "use the form data:image/png;base64,<data>."
        )
    params = [p.strip().lower() for p in header[len("data:") :].split(";")]
    media = params[0]
    allowed = [t for f in limits.formats for t in _MEDIA_TYPES.get(f, ())]
    if media and media not in allowed:
        raise InvalidImageError(
            f"The {what} data URL says {media[:40]!r}; send an image ({', '.join(allowed)})."
        )
    if "base64" not in params:
        raise InvalidImageError(
            f"The {what} data URL is not base64-encoded; use the form data:image/png;base64,<data>."
        )
    return payload


def base64_image_bytes(
    text: str, *, limits: ImageLimits = DEFAULT_LIMITS, what: str = "image"
) -> bytes:
    """The bytes of a base64 string or a ``data:image/...;base64,`` URL, not yet decoded as an image.

    Checked: a string, a well-formed data URL, valid base64, and not empty or over
    ``limits.max_bytes`` (refused before the decoded bytes are allocated). URL-safe
    base64 and missing ``=`` padding are accepted too, since browsers and HTTP clients
    produce both. For callers that need the file itself (PNG metadata); everyone else
    wants :func:`decode_base64_image`.
    """
    if not isinstance(text, str):
        raise InvalidImageError(f"The {what} must be a base64 string.")
    text = text.strip()
    if text[:5].lower() == "data:":
        text = _split_data_url(text, what, limits)
    elif (scheme := _URL_SCHEME.match(text)) is not None:
        # No base64 has a ':', so this is a link (https:, file:, s3:, C:\...): say why it is
        # not followed, not merely "not base64".
        raise InvalidImageError(
            f"The {what} is a link ({scheme.group(1).lower()[:16]}:...), and this server does not "
            "fetch images from links (by design: no server-side requests). Send the picture itself: "
            "its file's bytes base64-encoded, or a data:image/png;base64,<data> URL (or, where an "
            "API takes files: POST /api/v1/uploads, /v1/images/edits, upload it as multipart form data)."
        )
    compact = "".join(text.split())
    if not compact:
        raise InvalidImageError(f"The {what} is empty; send base64-encoded image data.")
    # Refuse before allocating the decoded bytes.
    estimated = len(compact) * 3 // 4 - compact[-2:].count("=")
    _check_byte_count(estimated, limits, what)

    bad = (
        f"The {what} is not valid base64; send the file's bytes base64-encoded "
        "(optionally as a data:image/...;base64, URL)."
    )
    if len(compact) % 4 == 1:
        raise InvalidImageError(bad)
    compact += "=" * (-len(compact) % 4)
    urlsafe = ("-" in compact or "_" in compact) and not ("+" in compact or "/" in compact)
    try:
        data = base64.b64decode(compact, altchars=b"-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(bad) from exc
    _check_byte_count(len(data), limits, what)
    return data


def decode_base64_image(
    text: str, *, limits: ImageLimits = DEFAULT_LIMITS, what: str = "image"
) -> Image.Image:
    """Decode a base64 string or a ``data:image/...;base64,`` URL into an image
    (:func:`base64_image_bytes`, then :func:`decode_image`)."""
    return decode_image(base64_image_bytes(text, limits=limits, what=what), limits=limits, what=what)


def read_image_file(
    path: str | os.PathLike[str], *, limits: ImageLimits = DEFAULT_LIMITS, what: str = "image"
) -> bytes:
    """The bytes of an image file, its size on disk checked before reading it."""
    p = Path(path)
    try:
        if not p.exists():
            raise InvalidImageError(f"The {what} file was not found: {p}")
        if not p.is_file():
            raise InvalidImageError(f"The {what} path is not a regular file: {p}")
        _check_byte_count(p.stat().st_size, limits, what)
        with p.open("rb") as fh:
            # Read one byte past the limit so a file that grew meanwhile is still caught.
            return fh.read(limits.max_bytes + 1)
    except InvalidImageError:
        raise
    except OSError as exc:
        raise InvalidImageError(f"The {what} file could not be read: {p} ({exc})") from exc


def load_image_file(
    path: str | os.PathLike[str], *, limits: ImageLimits = DEFAULT_LIMITS, what: str = "image"
) -> Image.Image:
    """Read and decode an image file (:func:`read_image_file`, then :func:`decode_image`)."""
    return decode_image(read_image_file(path, limits=limits, what=what), limits=limits, what=what)


def to_rgb(img: Image.Image) -> Image.Image:
    """Return an RGB copy; transparent areas become white, not black.

    Transparency is an alpha band (RGBA, LA, PA...) or a transparent colour (a PNG
    ``tRNS`` chunk, ``info["transparency"]``, on P, L or RGB). 16-bit and float
    greyscale is scaled into 8 bit by range (see :func:`_to_8bit_gray`), not clipped.
    Clip art and logos usually have transparent backgrounds that are meant to look
    like paper, and a black background would steer img2img badly (and the judge, and
    a model trained on it). The one RGB-on-white function of the toolkit.
    """
    if has_transparency(img):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode == "RGB":
        return img.copy()
    return _normalize_mode(img).convert("RGB")


def has_transparency(img: Image.Image) -> bool:
    """An alpha band, or a transparent colour that ``convert("RGBA")`` turns into alpha."""
    return _has_alpha(img) or (img.mode in ("L", "RGB") and "transparency" in img.info)


# Modes Pillow's PNG writer accepts as they are.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "I;16B"})


def _is_latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def encode_png(img: Image.Image, text_chunks: dict[str, str] | None = None) -> bytes:
    """Encode as PNG with text chunks: tEXt when the value is latin-1, iTXt (UTF-8) otherwise."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text_chunks or {}).items():
        # PNG keywords are 1-79 latin-1 characters; a bad one is a programming error.
        if not (1 <= len(key) <= 79) or not _is_latin1(key):
            raise ValueError(f"invalid PNG text keyword: {key!r}")
        if _is_latin1(value):
            info.add_text(key, value)
        else:
            info.add_itxt(key, value)
    if img.mode not in _PNG_MODES:
        img = _normalize_mode(img)
    buf = BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def jpeg_data_url(image: Image.Image, max_side: int = 256, quality: int = 80) -> str:
    """A small JPEG of a picture as a data: URL (progress previews: a few kilobytes inline in
    an event, no second request), never larger than ``max_side`` (the page scales it up)."""
    im = to_rgb(image)
    if max(im.size) > max_side:
        im = ImageOps.contain(im, (max_side, max_side), Image.Resampling.BILINEAR)
    buf = BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
