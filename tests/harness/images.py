"""Small helpers shared by the server tests."""

from __future__ import annotations

import base64
import io

from PIL import Image


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_b64(img: Image.Image) -> str:
    return base64.b64encode(png_bytes(img)).decode()


def data_url(img: Image.Image) -> str:
    return "data:image/png;base64," + png_b64(img)
