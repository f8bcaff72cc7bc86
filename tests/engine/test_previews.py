"""Progress previews: the fitted latent-to-colour map (engines/preview.py) on the embedded
default model's trained VAE, and BILDWERK_PREVIEW=vae keeping the full decode."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import bildwerk.engines.preview as preview_module
from bildwerk.core.request import build_request
from bildwerk.engines.preview import PREVIEW_MAPS, approx_preview, latent_colours
from bildwerk.engines.speed import SPEED, SpeedSettings
from bildwerk.images.tensors import to_pil

# Off the fitted grid (levels 0, 127.5, 255), saturated and not.
COLOURS = [(200, 60, 30), (30, 180, 90), (10, 20, 200), (230, 230, 230), (25, 25, 25)]


@pytest.fixture
def default_model(engine):
    model = engine._model(None)
    model.extras.pop(PREVIEW_MAPS, None)  # each test fits afresh (and may count fits)
    return model


@pytest.fixture
def fits(monkeypatch):
    calls = []
    real = preview_module.fit_latent_colours

    def counted(*args, **kw):
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(preview_module, "fit_latent_colours", counted)
    return calls


def _solid(colour, side=64) -> torch.Tensor:
    return (torch.tensor(colour, dtype=torch.float32)[None, :, None, None] / 127.5 - 1).expand(1, 3, side, side)


def test_a_solid_colours_latents_preview_as_that_colour(engine, default_model):
    vae = default_model.vae
    encode = lambda x: engine._encode_image(default_model, vae, x)  # noqa: E731
    colours = latent_colours(default_model, vae, encode)
    seen = []
    for colour in COLOURS:
        picture = approx_preview(colours, encode(_solid(colour)), (64, 64))
        assert picture.size == (64, 64)
        seen.append(np.asarray(picture, dtype=float)[16:48, 16:48].mean(axis=(0, 1)))
    for colour, got in zip(COLOURS, seen, strict=True):
        # Measured: 13-44 levels off per channel (a linear map of a nonlinear VAE; its own
        # decoder is up to 80 off on these colours).
        err = np.abs(got - np.array(colour))
        assert err.max() <= 50 and err.mean() <= 35, (colour, got.round())
        # And nearer its own colour than any other of the set.
        assert min(COLOURS, key=lambda c: np.abs(got - np.array(c)).sum()) == colour


def test_the_engines_preview_has_the_pictures_size_and_fits_once_per_vae(engine, default_model, fits):
    job = engine.prepare(build_request(prompt="ein roter Apfel", seed=3, steps=4, width=96, height=64))
    assert job.model is default_model and job.vae is default_model.vae
    engine.step([job])
    first = engine.preview(job)
    engine.step([job])
    second = engine.preview(job)
    assert first.size == second.size == (96, 64)
    assert not np.array_equal(np.asarray(first), np.asarray(second))  # it follows the denoising
    other = engine.prepare(build_request(prompt="ein Baum", seed=4, steps=4, width=64, height=64))
    engine.step([other])
    assert engine.preview(other).size == (64, 64)
    assert len(fits) == 1  # one fit for the model's VAE, whatever the jobs and sizes
    result = engine.finish(job)
    assert result.images[0].size == first.size
    # Another VAE object (an override) has its own map.
    latent_colours(default_model, copy.deepcopy(default_model.vae), lambda x: engine._encode_image(
        default_model, default_model.vae, x))
    assert len(fits) == 2


def test_preview_vae_keeps_the_full_decode(engine, default_model, fits, monkeypatch):
    monkeypatch.setenv("BILDWERK_PREVIEW", "vae")
    speed = SpeedSettings.from_env().resolve(default_model.device)
    assert speed.preview == "vae"
    job = engine.prepare(build_request(prompt="ein See", seed=5, steps=4))
    engine.step([job])
    approx = np.asarray(engine.preview(job))
    monkeypatch.setitem(default_model.extras, SPEED, speed)
    decoded = np.asarray(engine.preview(job))
    st = job.state
    lat = st.denoised if st.denoised is not None else st.latents
    vae = job.vae
    with torch.inference_mode():  # the decode as the engine always made it
        today = vae.decode(lat[:1] / vae.config.scaling_factor, return_dict=False)[0]
    assert np.array_equal(decoded, np.asarray(to_pil(today)[0]))
    assert not np.array_equal(decoded, approx)
    assert len(fits) == 1  # only the approx preview fitted
