"""Decoding untrusted images: limits before decoding, clear errors, sane modes."""

from __future__ import annotations

import base64
import struct
import zlib
from io import BytesIO

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from bildwerk.core.errors import InvalidImageError
from bildwerk.images import (
    DATASET_LIMITS,
    DEFAULT_LIMITS,
    ImageLimits,
    base64_image_bytes,
    decode_base64_image,
    decode_image,
    encode_png,
    load_image_file,
    read_image_file,
    to_rgb,
)


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _noise(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge canvas (bit depth 1, grayscale)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


# --- decode_image: happy paths -------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_decodes_accepted_formats(fmt: str) -> None:
    img = decode_image(_encode(_noise(), fmt))
    assert img.size == (64, 48)
    assert img.mode == "RGB"
    img.getpixel((0, 0))  # loaded and usable without the source buffer


def test_png_roundtrip_is_lossless_and_detached() -> None:
    src = _noise()
    out = decode_image(_encode(src))
    assert np.array_equal(np.asarray(out), np.asarray(src))
    assert type(out) is Image.Image  # a plain copy, not a file-backed ImageFile


def test_rgba_mask_keeps_alpha() -> None:
    mask = Image.new("RGBA", (8, 8), (0, 0, 0, 255))
    mask.putpixel((2, 3), (0, 0, 0, 0))
    out = decode_image(_encode(mask), what="mask")
    assert out.mode == "RGBA"
    assert out.getpixel((2, 3))[3] == 0


def test_exif_orientation_is_applied() -> None:
    src = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(_encode(src, "JPEG", exif=exif))
    assert out.size == (20, 40)


# --- decode_image: mode normalisation --------------------------------------------------


def test_palette_with_transparency_becomes_rgba() -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    pal.putpixel((1, 1), 1)
    out = decode_image(_encode(pal, transparency=1))
    assert out.mode == "RGBA"
    assert out.getpixel((1, 1))[3] == 0
    assert out.getpixel((0, 0)) == (255, 0, 0, 255)


def test_palette_without_transparency_becomes_rgb() -> None:
    out = decode_image(_encode(Image.new("P", (8, 8), 0)))
    assert out.mode == "RGB"


def test_la_becomes_rgba() -> None:
    out = decode_image(_encode(Image.new("LA", (8, 8), (200, 0))))
    assert out.mode == "RGBA"
    assert out.getpixel((0, 0)) == (200, 200, 200, 0)


def test_16bit_gray_is_scaled_not_clipped() -> None:
    arr = np.tile(np.array([[0, 32768, 65535, 1000]], dtype=np.uint16), (8, 2))  # 8x8: a real picture
    out = decode_image(_encode(Image.fromarray(arr)))
    assert out.mode == "L"
    assert list(np.asarray(out)[0]) == [0, 128, 255, 4] * 2


def test_cmyk_jpeg_becomes_rgb() -> None:
    out = decode_image(_encode(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG"))
    assert out.mode == "RGB"


def test_one_bit_becomes_l() -> None:
    src = Image.new("1", (8, 8), 0)
    src.putpixel((0, 0), 1)
    out = decode_image(_encode(src))
    assert out.mode == "L"
    assert out.getpixel((0, 0)) == 255 and out.getpixel((1, 1)) == 0


# --- decode_image: limits and garbage --------------------------------------------------


def test_empty_data_is_rejected_with_what() -> None:
    with pytest.raises(InvalidImageError, match="mask is empty"):
        decode_image(b"", what="mask")


def test_too_many_bytes_is_rejected_before_decoding() -> None:
    # Garbage over the limit must fail on size, i.e. without ever being parsed.
    with pytest.raises(InvalidImageError, match="more than the limit"):
        decode_image(b"x" * 2000, limits=ImageLimits(max_bytes=1000))


def test_too_many_pixels_from_a_tiny_file() -> None:
    data = _encode(Image.new("1", (8000, 8000), 0))
    assert len(data) < 64 * 1024  # tiny on the wire, 64 Mpx declared
    with pytest.raises(InvalidImageError, match="8000x8000"):
        decode_image(data)


def test_pixel_limit_is_configurable() -> None:
    data = _encode(_noise(100, 100))
    with pytest.raises(InvalidImageError, match="pixels"):
        decode_image(data, limits=ImageLimits(max_pixels=5000))
    assert decode_image(data, limits=ImageLimits(max_pixels=10_000)).size == (100, 100)


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow's warning zone, then its error zone
def test_pillow_bomb_checks_become_errors(side: int) -> None:
    generous = ImageLimits(max_pixels=10**12)
    with pytest.raises(InvalidImageError, match="pixels"):
        decode_image(_png_declaring(side, side), limits=generous)


def test_non_image_bytes_name_the_formats() -> None:
    with pytest.raises(InvalidImageError, match="PNG, JPEG, WEBP") as info:
        decode_image(b"this is certainly not an image" * 10, what="mask")
    assert "mask" in str(info.value)


def test_truncated_png_is_rejected() -> None:
    data = _encode(_noise(128, 128))
    with pytest.raises(InvalidImageError):
        decode_image(data[: len(data) // 2])


def test_gif_is_not_an_accepted_format() -> None:
    data = _encode(Image.new("RGB", (8, 8)), "GIF")
    with pytest.raises(InvalidImageError, match="PNG, JPEG, WEBP"):
        decode_image(data)
    assert decode_image(data, limits=ImageLimits(formats=("GIF",))).size == (8, 8)


def test_limits_errors_are_value_errors() -> None:
    assert issubclass(InvalidImageError, ValueError)
    assert DEFAULT_LIMITS.max_pixels == 4096 * 4096


# --- base64 ----------------------------------------------------------------------------


def test_base64_raw_and_data_url() -> None:
    data = _encode(_noise(16, 16))
    b64 = base64.b64encode(data).decode()
    assert decode_base64_image(b64).size == (16, 16)
    assert decode_base64_image(f"data:image/png;base64,{b64}").size == (16, 16)
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    assert decode_base64_image(f"  {wrapped}\n").size == (16, 16)


def test_base64_urlsafe_and_unpadded() -> None:
    data = _encode(_noise(17, 13))
    b64 = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert decode_base64_image(b64).size == (17, 13)


@pytest.mark.parametrize(
    "text", ["!!!not base64!!!", "abcde", "data:image/png;base64,@@@@", "data:image/png,abcd", ""]
)
def test_bad_base64_is_rejected(text: str) -> None:
    with pytest.raises(InvalidImageError):
        decode_base64_image(text, what="mask")


def test_base64_valid_but_not_an_image() -> None:
    with pytest.raises(InvalidImageError, match="PNG, JPEG, WEBP"):
        decode_base64_image(base64.b64encode(b"hello world, not a picture").decode())


def test_base64_image_bytes_gives_the_file_itself() -> None:
    # png-info reads metadata from these bytes: they must be the file, byte for byte.
    data = _encode(_noise(16, 16))
    b64 = base64.b64encode(data).decode()
    assert base64_image_bytes(b64) == data
    assert base64_image_bytes(f"data:image/png;base64,{b64}") == data
    assert base64_image_bytes(base64.urlsafe_b64encode(data).decode().rstrip("=")) == data


def test_base64_image_bytes_checks_only_the_encoding() -> None:
    # Valid base64 of a non-image is returned: deciding what the bytes are is the caller's job.
    assert base64_image_bytes(base64.b64encode(b"not a picture").decode()) == b"not a picture"
    with pytest.raises(InvalidImageError, match="more than the limit"):
        base64_image_bytes(base64.b64encode(b"x" * 2000).decode(), limits=ImageLimits(max_bytes=1000))


@pytest.mark.parametrize("text", ["https://example.org/map.png", "HTTP://x", "file:///etc/passwd",
                                  "s3://bucket/key.png", "C:\\Users\\map.png"])
def test_a_link_is_refused_as_a_link(text: str) -> None:
    # Images are never fetched (SSRF): the message says so and how to send the picture,
    # instead of "not valid base64". base64_image_bytes is what every JSON face decodes with.
    for decode in (base64_image_bytes, decode_base64_image):
        with pytest.raises(InvalidImageError) as exc:
            decode(text, what="init image")
        msg = str(exc.value)
        assert "does not fetch images from links" in msg and "base64" in msg and "not valid" not in msg
        assert msg.startswith("The init image is a link") and "/etc/passwd" not in msg


@pytest.mark.parametrize("text", ["data:image/png;base64", "data:", "DATA:image/png;base64 iVBORw0KGgo="])
def test_data_url_without_a_comma_is_a_clear_error(text: str) -> None:
    with pytest.raises(InvalidImageError, match="no ',' before its data"):
        base64_image_bytes(text)
    with pytest.raises(InvalidImageError, match="no ',' before its data"):
        decode_base64_image(text)


def test_base64_size_checked_before_decoding() -> None:
    # Not even valid base64 past the first chars: the size check must fire first.
    with pytest.raises(InvalidImageError, match="more than the limit"):
        decode_base64_image("A" * 4000 + "!", limits=ImageLimits(max_bytes=1000))


# --- files ---------------------------------------------------------------------------


def test_load_image_file(tmp_path) -> None:
    path = tmp_path / "pic.png"
    path.write_bytes(_encode(_noise(20, 10)))
    assert load_image_file(path).size == (20, 10)
    assert load_image_file(str(path)).size == (20, 10)


def test_load_missing_file(tmp_path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(InvalidImageError, match="not found") as info:
        load_image_file(missing, what="mask")
    assert str(missing) in str(info.value)


def test_load_directory_and_oversized_file(tmp_path) -> None:
    with pytest.raises(InvalidImageError, match="not a regular file"):
        load_image_file(tmp_path)
    path = tmp_path / "big.png"
    path.write_bytes(_encode(_noise(64, 64)))
    with pytest.raises(InvalidImageError, match="more than the limit"):
        load_image_file(path, limits=ImageLimits(max_bytes=100))


def test_read_image_file_gives_bytes_within_the_limit(tmp_path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(_encode(_noise(8, 8)))
    assert read_image_file(path) == path.read_bytes()
    with pytest.raises(InvalidImageError, match="more than the limit"):
        read_image_file(path, limits=ImageLimits(max_bytes=10))
    with pytest.raises(InvalidImageError, match="not found"):
        read_image_file(tmp_path / "missing.png")


def test_dataset_limits_are_generous_but_limits() -> None:
    # Training and evaluation read the user's own pictures through the same decoder,
    # with more room: formats Pillow writes for clip art, 256 Mpx, but still a cap.
    gif = _encode(Image.new("RGB", (8, 8), "red"), "GIF")
    assert decode_image(gif, limits=DATASET_LIMITS).mode == "RGB"
    assert DATASET_LIMITS.max_pixels > DEFAULT_LIMITS.max_pixels
    with pytest.raises(InvalidImageError):
        decode_image(b"GIF89a garbage", limits=DATASET_LIMITS)


# --- to_rgb / encode_png -------------------------------------------------------------


def test_to_rgb_composites_transparency_on_white() -> None:
    img = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (255, 0, 0, 255))
    img.putpixel((2, 0), (255, 0, 0, 128))
    out = to_rgb(img)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (255, 0, 0)
    r, g, b = out.getpixel((2, 0))
    assert r == 255 and 120 <= g <= 135 and g == b


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("RGBA", (2, 2), (10, 20, 30, 0)),
        lambda: Image.new("LA", (2, 2), (10, 0)),
        lambda: Image.new("PA", (2, 2), (0, 0)),
        lambda: Image.new("RGBa", (2, 2), (0, 0, 0, 0)),
    ],
    ids=["RGBA", "LA", "PA", "RGBa"],
)
def test_to_rgb_alpha_bands_become_white(make) -> None:
    assert to_rgb(make()).getpixel((0, 0)) == (255, 255, 255)


def test_to_rgb_transparent_colours_become_white() -> None:
    # A tRNS chunk on L or RGB marks one colour transparent; the dataset builder always
    # honoured it, and now the server, the judge and training do too.
    rgb = Image.new("RGB", (8, 8), (10, 20, 30))
    rgb.putpixel((1, 1), (1, 2, 3))
    rgb.info["transparency"] = (10, 20, 30)
    out = to_rgb(rgb)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (1, 2, 3)
    grey = Image.new("L", (2, 2), 7)
    grey.info["transparency"] = 7
    assert to_rgb(grey).getpixel((0, 0)) == (255, 255, 255)
    # Through a real PNG file as well.
    assert to_rgb(decode_image(_encode(rgb, transparency=(10, 20, 30)))).getpixel((0, 0)) == (255, 255, 255)


def test_to_rgb_scales_16_bit_grey_by_range() -> None:
    # Neither clipped (convert("RGB") makes 16384 white) nor stretched to the maximum.
    arr = np.full((2, 2), 16384, dtype=np.uint16)
    arr[0, 0] = 65535
    out = to_rgb(Image.fromarray(arr))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (64, 64, 64)


def test_to_rgb_other_modes() -> None:
    assert to_rgb(Image.new("LA", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)
    src = _noise(5, 5)
    copy = to_rgb(src)
    assert copy is not src and np.array_equal(np.asarray(copy), np.asarray(src))


def test_encode_png_text_chunks_latin1_and_unicode() -> None:
    chunks = {"plain": "Grüße, café", "korean": "고양이 그림", "russian": "кот"}
    data = encode_png(_noise(8, 8), chunks)
    assert b"tEXt" in data and b"iTXt" in data
    with Image.open(BytesIO(data)) as im:
        assert im.format == "PNG"
        assert {k: str(v) for k, v in im.text.items()} == chunks


def test_encode_png_without_chunks_and_odd_mode() -> None:
    data = encode_png(Image.new("CMYK", (3, 3)))
    with Image.open(BytesIO(data)) as im:
        assert im.mode == "RGB" and im.size == (3, 3)


@pytest.mark.parametrize(("size", "why"), [((1, 1), "at least 8"), ((4096, 8), "8:1"), ((8, 200), "8:1")])
def test_degenerate_pictures_are_refused(size, why) -> None:
    # A 100-byte 4096x8 upload would ask for a 2048x64 generation: 32x the work of its bytes.
    with pytest.raises(InvalidImageError, match=why):
        decode_image(_encode(Image.new("RGB", size)))
    assert decode_image(_encode(Image.new("RGB", size)), limits=DATASET_LIMITS).size == size


def test_megabytes_of_text_chunks_are_refused() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "x" * (300 * 1024))
    buf = BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG", pnginfo=info)
    with pytest.raises(InvalidImageError, match="text"):
        decode_image(buf.getvalue())


@pytest.mark.parametrize("media", ["text/html", "application/javascript", "image/svg+xml"])
def test_a_data_url_must_say_it_is_an_image(media) -> None:
    png = base64.b64encode(_encode(Image.new("RGB", (16, 16)))).decode()
    with pytest.raises(InvalidImageError, match="data URL says"):
        decode_base64_image(f"data:{media};base64,{png}")
    assert decode_base64_image(f"data:image/png;base64,{png}").size == (16, 16)
    assert decode_base64_image(f"data:;base64,{png}").size == (16, 16)


def test_a_large_colour_profile_is_not_text() -> None:
    buf = BytesIO()
    Image.new("RGB", (64, 64)).save(buf, "PNG", icc_profile=b"\x00" * (600 * 1024))
    assert decode_image(buf.getvalue()).size == (64, 64)
