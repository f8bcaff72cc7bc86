"""The Python face: one class, the same use case, validation and records as the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bildwerk import Bildwerk
from bildwerk.app.generate import Generator
from bildwerk.core.errors import InvalidRequestError, ModelNotFoundError
from bildwerk.core.spec import JobSpec
from bildwerk.images.metadata import read_png_metadata


@pytest.fixture(scope="module")
def bw(tiny_models):
    with Bildwerk(str(tiny_models["sd"])) as b:
        yield b


def test_generate_vary_inpaint_end_to_end(bw, tmp_path):
    r = bw.generate("ein roter Apfel", seed=7, steps=2, num_images=2)
    assert r.seeds == [7, 8] and len(r.images) == 2
    rec = r.record(0)
    assert rec["request"]["prompt_record"]["original"] == "ein roter Apfel"
    assert rec["request"]["prompt_record"]["language"] == "de"  # the prompt steps ran
    paths = r.save(tmp_path / "out")
    assert [p.name for p in paths] == ["text-to-image-seed7.png", "text-to-image-seed8.png"]
    assert read_png_metadata(paths[0])["record"]["seed"] == 7

    src = tmp_path / "in.png"
    r.images[0].save(src)
    v = bw.vary(src, "als Aquarell", seed=3, steps=2, strength=0.5)  # a path works as input
    assert v.images[0].size == r.images[0].size and v.record()["request"]["mode"] == "image-to-image"

    mask = Image.new("L", r.images[0].size, 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 40, 40), fill=255)
    i = bw.inpaint(r.images[0], mask, "ein See", seed=4, steps=2)
    before, after = np.asarray(r.images[0]), np.asarray(i.images[0])
    outside = np.asarray(mask) == 0
    assert np.array_equal(before[outside], after[outside])


def test_same_spec_same_pixels_as_every_other_face(bw, tiny_models):
    r = bw.generate("a blue car", seed=11, steps=2)
    spec = JobSpec.build(origin="cli", prompt="a blue car", seed=11, steps=2, model=str(tiny_models["sd"]))
    other = Generator().run(spec)
    assert np.array_equal(np.asarray(r.images[0]), np.asarray(other.images[0]))


def test_bad_input_is_one_clear_error(bw, tmp_path):
    with pytest.raises(InvalidRequestError, match="multiple of 8"):
        bw.generate("x", width=100)
    with pytest.raises(InvalidRequestError, match="steps"):
        bw.generate("x", steps=0)
    with pytest.raises(ModelNotFoundError):
        bw.generate("x", model=str(tmp_path / "nothing"))


def test_prompt_options_as_a_dict(bw):
    r = bw.generate("ein See", seed=1, steps=1, options={"translate": "off", "wildcards": False})
    assert r.record()["request"]["prompt"] == "ein See"
