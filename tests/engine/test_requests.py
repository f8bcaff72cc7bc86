"""Request validation: bounded, clear, before anything is allocated."""

from __future__ import annotations

import pytest
from PIL import Image

from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.request import MAX_IMAGES, MAX_PROMPT_CHARS, MAX_STEPS, Mode, build_request


def test_defaults_and_seed_drawn():
    r = build_request(prompt="  ein See  ")
    assert r.mode is Mode.TEXT_TO_IMAGE and r.prompt == "ein See"
    assert 0 <= r.seed < 2**32
    assert r.record()["seed"] == r.seed


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"width": 500}, "multiple of 8"),
        ({"height": 32}, "between 64 and 2048"),
        ({"width": 4096}, "between 64 and 2048"),
        ({"steps": 0}, "steps"),
        ({"steps": MAX_STEPS + 1}, "steps"),
        ({"num_images": MAX_IMAGES + 1}, "num_images"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt"),
        ({"guidance": -1}, "guidance"),
        ({"strength": 0}, "strength"),
        ({"seed": -5}, "seed"),
        ({"scheduler": "warp drive"}, "unknown scheduler 'warp drive'; choose one of"),
        ({"mode": "paint"}, "mode"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_fields_give_clear_messages(fields, message):
    with pytest.raises(InvalidRequestError, match=message):
        build_request(**({"prompt": "x"} | fields))


def test_scheduler_aliases_are_canonical():
    assert build_request(scheduler="euler_a").scheduler == "Euler a"
    assert build_request(scheduler="dpmpp_2m").scheduler == "DPM++ 2M"


def test_mask_size_mismatch():
    with pytest.raises(InvalidRequestError, match="mask is 32x32 but the image is 64x64"):
        build_request(mode="inpaint", image=Image.new("RGB", (64, 64)), mask=Image.new("L", (32, 32)))


def test_text_to_image_rejects_image():
    with pytest.raises(InvalidRequestError, match="takes no image"):
        build_request(image=Image.new("RGB", (64, 64)))


def test_record_excludes_pixels_but_hashes_them():
    img = Image.new("RGB", (64, 64), "red")
    rec = build_request(mode="image-to-image", image=img).record()
    assert "image" not in rec and len(rec["image_sha256"]) == 64
