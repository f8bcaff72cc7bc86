"""Normalisation (white square) and duplicate detection."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bildwerk.train.data import find_duplicates, fingerprint, hamming, normalize_image


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA"])
def test_normalize_white_background_centred_square(mode):
    src = Image.new("RGBA", (60, 20), (0, 0, 0, 0))
    ImageDraw.Draw(src).rectangle((10, 5, 49, 14), fill=(200, 0, 0, 255))
    if mode != "RGBA":
        src = src.convert(mode) if mode != "P" else src.convert("P", palette=Image.Palette.ADAPTIVE)
        if mode == "P":  # palette with a transparent index, as many PNG stamps have
            src.info["transparency"] = src.getpixel((0, 0))
    out = normalize_image(src, 128)
    assert out.size == (128, 128) and out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    for corner in (arr[0, 0], arr[0, -1], arr[-1, 0], arr[-1, -1], arr[10, 64]):
        assert tuple(corner) == (255, 255, 255)  # transparency became white
    drawn = np.argwhere(arr.min(axis=2) < 200)
    (top, left), (bottom, right) = drawn.min(axis=0), drawn.max(axis=0)
    assert abs((top + bottom) / 2 - 63.5) <= 1.5  # centred
    assert abs((left + right) / 2 - 63.5) <= 1.5
    assert right - left > 100  # trimmed, so the wide bar fills the width (minus the margin)
    assert arr[64, 64, 0] > arr[64, 64, 1] + 100 or mode == "LA"  # still red (grey for LA)


def test_normalize_without_trim_keeps_proportions():
    src = Image.new("RGB", (100, 50), "white")
    ImageDraw.Draw(src).rectangle((0, 0, 99, 49), outline="black")
    out = np.asarray(normalize_image(src, 64, trim=False))
    assert out.shape == (64, 64, 3)
    assert out[:14].min() >= 250 and out[-14:].min() >= 250  # padded top and bottom


def _norm(img: Image.Image) -> Image.Image:
    return normalize_image(img, 128)


def test_resized_copy_is_a_near_duplicate_and_distinct_images_are_not(draw_shape):
    draw = draw_shape
    base = draw("disc", "red", (90, 70))
    resized = base.resize((270, 210), Image.Resampling.BICUBIC)
    other_colour = draw("disc", "green", (90, 70))
    other_shape = draw("box", "red", (90, 70))
    clock3 = draw("clock", "black", (80, 80))
    clock4 = clock3.copy()
    ImageDraw.Draw(clock3).line((40, 40, 40, 12), fill="black", width=4)
    ImageDraw.Draw(clock4).line((40, 40, 66, 40), fill="black", width=4)
    prints = [fingerprint(_norm(i)) for i in (base, resized, other_colour, other_shape, clock3, clock4, base)]
    assert hamming(prints[0].dhash, prints[1].dhash) <= 4
    result = find_duplicates(prints)
    assert result.clusters == [[0, 1, 6], [2], [3], [4], [5]]
    assert result.exact_links == 1 and result.near_links == 1


def test_find_duplicates_handles_tiny_inputs(draw_shape):
    assert find_duplicates([]).clusters == []
    one = fingerprint(_norm(draw_shape("ring", "blue")))
    assert find_duplicates([one]).clusters == [[0]]


def test_white_part_of_a_picture_is_not_trimmed_but_a_white_frame_is():
    flag = Image.new("RGBA", (100, 60), (0, 0, 0, 0))
    d = ImageDraw.Draw(flag)
    d.rectangle((10, 10, 89, 29), fill="white")  # the white half of a white-red flag
    d.rectangle((10, 30, 89, 49), fill="red")
    arr = np.asarray(normalize_image(flag, 64)).astype(int)
    red_rows = np.nonzero(((arr[:, :, 0] - arr[:, :, 1]) > 100).any(axis=1))[0]
    # centred as a whole flag: red fills the lower half (rows ~32-47), not the square
    assert 30 <= red_rows.min() <= 34 and 45 <= red_rows.max() <= 49
    framed = Image.new("RGB", (100, 60), "white")  # opaque white background: trimmed
    ImageDraw.Draw(framed).ellipse((40, 20, 60, 40), fill="blue")
    drawn = np.asarray(normalize_image(framed, 64)).min(axis=2) < 200
    assert drawn.sum(axis=0).max() >= 56


def test_raw_pictures_go_through_the_toolkits_decoder(tmp_path):
    from bildwerk.core.errors import InvalidImageError
    from bildwerk.train.data.imaging import load_raw_image

    # 16-bit grey is scaled by range, as everywhere else: a dark picture stays dark
    # (it used to be stretched to its maximum, which made this one blank white).
    Image.fromarray(np.full((8, 8), 16384, dtype=np.uint16)).save(tmp_path / "grey16.png")
    grey = load_raw_image(tmp_path / "grey16.png")
    assert grey.mode == "L" and grey.getpixel((0, 0)) == 64
    # EXIF orientation is applied while decoding.
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (40, 20), "red").save(tmp_path / "turned.jpg", exif=exif)
    assert load_raw_image(tmp_path / "turned.jpg").size == (20, 40)
    # Formats beyond the server's three are fine for a dataset; garbage is a clear error.
    Image.new("P", (8, 8), 3).save(tmp_path / "tiny.gif")
    assert load_raw_image(tmp_path / "tiny.gif").size == (8, 8)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    with pytest.raises(InvalidImageError, match="picture"):
        load_raw_image(tmp_path / "broken.png")


def test_normalize_uses_the_toolkits_rgb_on_white():
    from bildwerk.images.io import to_rgb

    # A transparent colour (tRNS) is background, trimmed away like alpha.
    pic = Image.new("RGB", (40, 40), (0, 255, 0))
    pic.paste((200, 0, 0), (10, 10, 30, 30))
    pic.info["transparency"] = (0, 255, 0)
    out = np.asarray(normalize_image(pic, 32, margin=0.25))  # the red square, trimmed, in a white frame
    assert (out[1, 1] == 255).all() and (out[16, 16] == (200, 0, 0)).all()
    loose = np.asarray(normalize_image(pic, 40, trim=False))
    assert (loose == np.asarray(to_rgb(pic))).all()
