"""Crop-with-context and bit-exact paste-back for "only masked" inpainting."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bildwerk.core.errors import InvalidImageError
from bildwerk.images import (
    CropBox,
    InpaintCrop,
    composite_full,
    context_box,
    crop_for_inpaint,
    feather_mask,
    mask_bbox,
    paste_back,
)


def _noise(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")


def _ellipse_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return mask


# --- CropBox / context_box ----------------------------------------------------------


def test_cropbox_properties() -> None:
    box = CropBox(10, 20, 50, 40)
    assert (box.width, box.height) == (40, 20)
    assert box.as_tuple() == (10, 20, 50, 40)


def _contains(box: CropBox, inner: tuple[int, int, int, int]) -> bool:
    left, top, right, bottom = inner
    return box.left <= left and box.top <= top and box.right >= right and box.bottom >= bottom


@pytest.mark.parametrize("aspect", [1.0, 0.75, 4 / 3, 1.75, 0.5])
def test_context_box_properties_random(aspect: float) -> None:
    rng = np.random.default_rng(int(aspect * 1000))
    for _ in range(300):
        img_w, img_h = (int(v) for v in rng.integers(16, 1500, 2))
        left = int(rng.integers(0, img_w - 1))
        top = int(rng.integers(0, img_h - 1))
        right = int(rng.integers(left + 1, img_w + 1))
        bottom = int(rng.integers(top + 1, img_h + 1))
        padding = int(rng.integers(0, 80))
        box = context_box(
            (left, top, right, bottom), (img_w, img_h), padding=padding, aspect=aspect
        )

        assert 0 <= box.left < box.right <= img_w
        assert 0 <= box.top < box.bottom <= img_h
        need = (
            max(0, left - padding),
            max(0, top - padding),
            min(img_w, right + padding),
            min(img_h, bottom + padding),
        )
        assert _contains(box, need)
        # Where the image leaves room, the aspect is met up to one pixel of rounding.
        if box.width < img_w and box.height < img_h:
            w, h = box.width, box.height
            assert abs(w - h * aspect) < 1.0 or abs(h - w / aspect) < 1.0


def test_context_box_is_centred_when_there_is_room() -> None:
    box = context_box((100, 200, 140, 220), (1000, 1000), padding=10, aspect=1.0)
    # bbox+padding is 60x40 -> square 60x60 centred on (120, 210).
    assert box == CropBox(90, 180, 150, 240)


def test_context_box_shifts_inside_at_the_edge() -> None:
    box = context_box((0, 0, 10, 10), (200, 100), padding=20, aspect=2.0)
    assert box.as_tuple() == (0, 0, 60, 30)


def test_context_box_clamps_when_image_is_too_small() -> None:
    # A square around a tall mask cannot fit a 100x50 image: clamp, aspect differs.
    box = context_box((40, 0, 60, 50), (100, 50), padding=30, aspect=1.0)
    assert box.as_tuple() == (10, 0, 90, 50)
    whole = context_box((0, 0, 100, 50), (100, 50), padding=8, aspect=1.0)
    assert whole.as_tuple() == (0, 0, 100, 50)


def test_context_box_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        context_box((5, 5, 5, 9), (20, 20), padding=0)
    with pytest.raises(ValueError):
        context_box((0, 0, 30, 5), (20, 20), padding=0)
    with pytest.raises(ValueError):
        context_box((0, 0, 5, 5), (20, 20), padding=-1)
    with pytest.raises(ValueError):
        context_box((0, 0, 5, 5), (20, 20), padding=0, aspect=0)


# --- crop_for_inpaint ---------------------------------------------------------------


def test_crop_for_inpaint_shapes() -> None:
    image = _noise(600, 400, 1)
    mask = _ellipse_mask(image.size, (250, 150, 330, 210))
    crop = crop_for_inpaint(image, mask, padding=32, work_size=(512, 512))
    assert isinstance(crop, InpaintCrop)
    assert crop.image.size == (512, 512) and crop.image.mode == "RGB"
    assert crop.mask.size == (512, 512) and crop.mask.mode == "L"
    assert set(np.unique(np.asarray(crop.mask))) == {0, 255}
    assert crop.box.width == crop.box.height  # square work size -> square crop
    bbox = mask_bbox(mask)
    assert bbox is not None and _contains(crop.box, bbox)


def test_crop_for_inpaint_same_size_is_a_plain_crop() -> None:
    image = _noise(300, 300, 2)
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (120, 120, 160, 160))
    crop = crop_for_inpaint(image, mask, padding=44, work_size=(128, 128))
    assert crop.box.as_tuple() == (76, 76, 204, 204)
    assert np.array_equal(np.asarray(crop.image), np.asarray(image.crop(crop.box.as_tuple())))


def test_thin_stroke_survives_downscale() -> None:
    image = _noise(1024, 1024, 3)
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (0, 500, 1024, 501))  # 1 px line across the whole image
    crop = crop_for_inpaint(image, mask, padding=0, work_size=(256, 256))
    assert np.asarray(crop.mask).any(axis=1).sum() >= 1


def test_crop_for_inpaint_errors() -> None:
    image = _noise(50, 50, 4)
    with pytest.raises(InvalidImageError, match="nothing to repaint"):
        crop_for_inpaint(image, Image.new("L", (50, 50), 0), padding=8, work_size=(64, 64))
    with pytest.raises(InvalidImageError, match="must match"):
        crop_for_inpaint(image, Image.new("L", (40, 50), 255), padding=8, work_size=(64, 64))


# --- paste_back / composite_full ------------------------------------------------------


def test_composite_is_exact_for_every_value() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    a = Image.fromarray(np.stack([values, values[::-1], values.T], axis=-1), mode="RGB")
    b = Image.fromarray(255 - np.asarray(a), mode="RGB")
    keep = composite_full(a, b, Image.new("L", a.size, 0))
    take = composite_full(a, b, Image.new("L", a.size, 255))
    assert np.array_equal(np.asarray(keep), np.asarray(a))
    assert np.array_equal(np.asarray(take), np.asarray(b))


@pytest.mark.parametrize("work_size", [(512, 512), (256, 384), (64, 64)])
def test_roundtrip_keeps_outside_pixels_bit_identical(work_size: tuple[int, int]) -> None:
    original = _noise(700, 500, 5)
    mask = _ellipse_mask(original.size, (300, 180, 420, 260))
    crop = crop_for_inpaint(original, mask, padding=48, work_size=work_size)
    generated = _noise(*work_size, seed=6)  # stand-in for the model's output
    alpha = feather_mask(mask, 8)

    out = paste_back(original, generated, crop.box, alpha)

    assert out.size == original.size and out.mode == "RGB"
    orig = np.asarray(original)
    res = np.asarray(out)
    outside = np.asarray(mask) == 0
    assert np.array_equal(res[outside], orig[outside])
    deep_inside = np.asarray(alpha) == 255
    assert deep_inside.sum() > 1000
    changed = np.any(res[deep_inside] != orig[deep_inside], axis=-1)
    assert changed.mean() > 0.95


def test_paste_back_takes_generated_where_alpha_is_full() -> None:
    original = Image.new("RGB", (40, 40), (10, 20, 30))
    box = CropBox(8, 8, 24, 24)
    generated = Image.new("RGB", (64, 64), (200, 100, 50))
    alpha = Image.new("L", original.size, 0)
    alpha.paste(255, (10, 10, 20, 20))
    out = np.asarray(paste_back(original, generated, box, alpha))
    assert (out[10:20, 10:20] == (200, 100, 50)).all()
    assert (out[:10] == (10, 20, 30)).all() and (out[20:] == (10, 20, 30)).all()


def test_paste_back_keeps_mode_and_rejects_alpha_outside_box() -> None:
    original = Image.new("RGBA", (30, 30), (1, 2, 3, 255))
    alpha = Image.new("L", original.size, 0)
    alpha.paste(255, (5, 5, 10, 10))
    out = paste_back(original, Image.new("RGB", (8, 8), (9, 9, 9)), CropBox(4, 4, 12, 12), alpha)
    assert out.mode == "RGBA" and out.getpixel((6, 6)) == (9, 9, 9, 255)
    with pytest.raises(ValueError, match="outside the crop box"):
        paste_back(original, Image.new("RGB", (8, 8)), CropBox(6, 6, 12, 12), alpha)
    with pytest.raises(ValueError):
        paste_back(
            original, Image.new("RGB", (8, 8)), CropBox(4, 4, 12, 12), alpha.resize((20, 20))
        )


def test_composite_full_resizes_generated() -> None:
    original = _noise(96, 64, 7)
    mask = _ellipse_mask(original.size, (30, 20, 60, 44))
    out = composite_full(original, _noise(48, 32, 8), mask)
    outside = np.asarray(mask) == 0
    assert out.size == original.size
    assert np.array_equal(np.asarray(out)[outside], np.asarray(original)[outside])
    assert not np.array_equal(np.asarray(out)[~outside], np.asarray(original)[~outside])
