"""The embedded default model: shipped, safe, multilingual, every mode through the engine."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from bildwerk.core.request import build_request
from bildwerk.models.loader import EMBEDDED_DEFAULT, load_model, resolve_model
from bildwerk.models.safety import check_model_folder


def test_default_model_is_shipped_as_safetensors_and_resolves():
    assert resolve_model(None).path == EMBEDDED_DEFAULT
    check_model_folder(EMBEDDED_DEFAULT)
    size = sum(p.stat().st_size for p in EMBEDDED_DEFAULT.rglob("*") if p.is_file())
    assert size <= 50 * 1024 * 1024


def test_the_shipped_unet_is_what_the_documented_recipe_builds():
    """`bildwerk default-model` (recipe "gpu") must reproduce the shape that ships."""
    import json

    from bildwerk.train.recipe import RECIPES
    from bildwerk.train.unet import DEFAULT_UNET

    shipped = json.loads((EMBEDDED_DEFAULT / "unet" / "config.json").read_text())
    recipe = {**DEFAULT_UNET, **RECIPES["gpu"]["unet"]}
    for key, value in recipe.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert shipped[key] == expected, key
    assert shipped["sample_size"] * 4 == RECIPES["gpu"]["resolution"]


def test_default_model_loads_as_multilingual_with_recommended_guidance():
    m = load_model(None, device="cpu")
    assert m.family == "sentence" and m.native_size == 64
    assert m.default_guidance == 4.0


def test_every_mode_with_german_and_korean_prompts(engine):
    t2i = engine.generate(build_request(prompt="ein roter Apfel", seed=1, steps=4))
    assert t2i.images[0].size == (64, 64) and t2i.model["name"] == "bildwerk-default"
    other = engine.generate(build_request(prompt="빨간 사과", seed=1, steps=4))
    assert not np.array_equal(np.asarray(t2i.images[0]), np.asarray(other.images[0]))  # the prompt matters
    i2i = engine.generate(build_request(mode="image-to-image", prompt="ein Baum", image=t2i.images[0], seed=2, steps=4))
    assert i2i.images[0].size == (64, 64)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).ellipse((16, 16, 48, 48), fill=255)
    inp = engine.generate(build_request(mode="inpaint", prompt="ein See", image=t2i.images[0], mask=mask, seed=3, steps=4))
    inside = np.asarray(mask) > 0
    assert np.array_equal(np.asarray(inp.images[0])[~inside], np.asarray(t2i.images[0])[~inside])


def test_every_sampler_runs_on_the_default_model(engine):
    """Karras sigmas on the cosine schedule repeat t=998 several times; the loop must still
    take exactly `steps` steps (the scheduler is told where it starts)."""
    from bildwerk.core.samplers import sampler_names as scheduler_names

    for name in scheduler_names():
        r = engine.generate(build_request(prompt="a red apple", seed=0, steps=6, scheduler=name))
        assert np.isfinite(np.asarray(r.images[0], dtype=float)).all(), name
