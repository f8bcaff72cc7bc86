"""Generation metadata inside output PNGs.

Two text chunks: ``parameters`` in the AUTOMATIC1111 layout, which image viewers,
galleries and other UIs already read, and ``bildwerk`` with the full request as
JSON so a result can be reproduced exactly.

The A1111 layout is::

    <prompt, possibly several lines>
    Negative prompt: <negative prompt, possibly several lines>
    Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x512, ...
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from io import BytesIO

from PIL import Image, UnidentifiedImageError

from bildwerk.core.errors import InvalidImageError
from bildwerk.images.io import DEFAULT_LIMITS, ImageLimits, encode_png, read_image_file

PARAMETERS_KEY = "parameters"
RECORD_KEY = "bildwerk"

_NEGATIVE_PREFIX = "Negative prompt:"

# One "Key: value" item of the settings line; the value is a JSON string or runs to the next comma.
_SETTING_RE = re.compile(
    r'\s*(?P<key>[^\s,:"][^,:"\n]*?)\s*:\s*(?P<value>"(?:\\.|[^\\"])*"|[^,]*?)\s*(?:,|$)'
)
_INT_RE = re.compile(r"-?\d+")
# A float needs a point or an exponent, so digit strings like "007" stay text.
_FLOAT_RE = re.compile(r"-?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][+-]?\d+)?")
_SIZE_RE = re.compile(r"(\d+)\s*x\s*(\d+)")
# A1111 (and we) only read the last line as settings when it has at least this many items.
_MIN_SETTINGS = 3


def _format_value(value: object) -> str:
    """Render a setting value, JSON-quoting it when it would break the comma list."""
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    if any(c in text for c in ',:"\n\r') or text != text.strip():
        return json.dumps(text, ensure_ascii=False)
    return text


def _check_key(key: str) -> None:
    if not key or key != key.strip() or any(c in key for c in ',:"\n\r'):
        raise ValueError(
            f"metadata key {key!r} cannot be written: keys must be non-empty, without "
            "surrounding spaces, and free of commas, colons, quotes and newlines"
        )


def format_a1111_parameters(
    *,
    prompt: str,
    negative_prompt: str = "",
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str | None = None,
    denoising_strength: float | None = None,
    extra: dict[str, object] | None = None,
) -> str:
    """Build the AUTOMATIC1111 ``parameters`` text; ``extra`` items go last, None values skipped."""
    settings: dict[str, object] = {
        "Steps": steps,
        "Sampler": sampler,
        "CFG scale": float(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
    }
    if model is not None:
        settings["Model"] = model
    if denoising_strength is not None:
        settings["Denoising strength"] = float(denoising_strength)
    for key, value in (extra or {}).items():
        _check_key(key)
        if key in settings:
            raise ValueError(f"extra metadata key {key!r} clashes with a standard setting")
        if value is not None:
            settings[key] = value

    line = ", ".join(f"{key}: {_format_value(value)}" for key, value in settings.items())
    text = prompt
    if negative_prompt:
        text += f"\n{_NEGATIVE_PREFIX} {negative_prompt}"
    return f"{text}\n{line}"


def _parse_value(raw: str) -> object:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    if _INT_RE.fullmatch(raw) and str(int(raw)) == raw:  # keep "007" (a hash?) as text
        return int(raw)
    if _FLOAT_RE.fullmatch(raw):
        number = float(raw)
        if math.isfinite(number):
            return number
    return raw


def _parse_settings(line: str) -> dict[str, object] | None:
    """Settings of the last line, or None when it does not look like a settings line."""
    items = [(m.group("key"), m.group("value")) for m in _SETTING_RE.finditer(line)]
    if len(items) < _MIN_SETTINGS:
        return None
    settings: dict[str, object] = {}
    for key, raw in items:
        value = _parse_value(raw)
        settings[key] = value
        if key == "Size" and isinstance(value, str):
            size = _SIZE_RE.fullmatch(value)
            if size:
                settings["width"], settings["height"] = int(size[1]), int(size[2])
    return settings


def parse_a1111_parameters(text: str) -> dict[str, object]:
    """Inverse of :func:`format_a1111_parameters`, tolerant of what other tools write.

    Returns ``prompt``, ``negative_prompt`` (both possibly empty) and every setting
    under its own key, with numbers parsed; ``Size`` also yields ``width``/``height``.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
    settings: dict[str, object] = {}
    if lines:
        parsed = _parse_settings(lines[-1])
        if parsed is not None:
            settings = parsed
            lines = lines[:-1]

    prompt_lines: list[str] = []
    negative_lines: list[str] | None = None
    for line in lines:
        if negative_lines is None and line.startswith(_NEGATIVE_PREFIX):
            negative_lines = [line[len(_NEGATIVE_PREFIX) :].removeprefix(" ")]
        elif negative_lines is None:
            prompt_lines.append(line)
        else:
            negative_lines.append(line)

    result: dict[str, object] = {
        "prompt": "\n".join(prompt_lines),
        "negative_prompt": "\n".join(negative_lines or []),
    }
    result.update(settings)
    return result


def png_with_metadata(img: Image.Image, *, parameters: str, record: dict) -> bytes:
    """Encode ``img`` as PNG carrying the A1111 ``parameters`` text and the JSON record."""
    return encode_png(
        img,
        {
            PARAMETERS_KEY: parameters,
            RECORD_KEY: json.dumps(record, ensure_ascii=False, sort_keys=True),
        },
    )


# Formats we open only to say "no PNG metadata here" instead of "not an image".
_METADATA_FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]


def _read_source(source: bytes | str | os.PathLike[str], limits: ImageLimits) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    return read_image_file(source, limits=limits)


def _text_chunks(im: Image.Image, limits: ImageLimits) -> dict[str, str]:
    """Text chunks of a PNG, including ones after the image data when that is safe to read."""
    chunks: dict[str, str] = {
        k: str(v) for k, v in im.info.items() if isinstance(k, str) and isinstance(v, str)
    }
    w, h = im.size
    # PngImageFile.text decodes the pixels to reach trailing chunks; skip that for huge images.
    if w * h <= limits.max_pixels:
        try:
            chunks.update({k: str(v) for k, v in im.text.items()})  # type: ignore[attr-defined]
        except Exception:  # truncated or corrupt pixel data: keep the leading chunks
            pass
    return chunks


def read_png_metadata(
    source: bytes | str | os.PathLike[str], *, limits: ImageLimits = DEFAULT_LIMITS
) -> dict:
    """Read ``parameters`` and the ``bildwerk`` record from a PNG (bytes or path).

    Returns ``{"parameters": str | None, "parsed": dict, "record": dict | None}``.
    Images without these chunks (or not PNG) give None/{}; bytes that are not an
    image at all raise :class:`InvalidImageError`.
    """
    data = _read_source(source, limits)
    result: dict = {"parameters": None, "parsed": {}, "record": None}
    try:
        with warnings.catch_warnings():
            # Only headers and text chunks are read here (pixels only within limits).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data), formats=_METADATA_FORMATS) as im:
                if im.format != "PNG":
                    return result
                chunks = _text_chunks(im, limits)
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(
            "The image declares far too many pixels to be a real picture; its metadata is not read."
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(
            "The file is not a readable image, so it has no metadata to show; "
            "send the PNG that bildwerk (or another tool) produced."
        ) from exc

    parameters = chunks.get(PARAMETERS_KEY)
    if parameters is not None:
        result["parameters"] = parameters
        result["parsed"] = parse_a1111_parameters(parameters)
    raw_record = chunks.get(RECORD_KEY)
    if raw_record is not None:
        try:
            record = json.loads(raw_record)
        except json.JSONDecodeError:
            record = None
        result["record"] = record if isinstance(record, dict) else None
    return result
