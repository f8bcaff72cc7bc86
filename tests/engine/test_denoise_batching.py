"""Per-request denoising state: two requests at different steps share one UNet call."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from bildwerk.core.request import build_request
from bildwerk.engines.denoise import run_unet
from bildwerk.engines.diffusers_engine import _Work
from bildwerk.models.loader import LoadedModel


def _state(engine, model, seed, steps, guidance=7.5, prompt="x"):
    req = build_request(prompt=prompt, model=None, seed=seed, steps=steps, guidance=guidance)
    return engine._initial_state(req, model, _Work(64, 64), [seed], model.vae)


def test_batched_unet_call_matches_separate_calls(engine, tiny_models):
    model = engine.models.get(str(tiny_models["sd"]))
    solo_a, solo_b = _state(engine, model, 1, 6), _state(engine, model, 2, 4, prompt="ein See")
    both_a, both_b = _state(engine, model, 1, 6), _state(engine, model, 2, 4, prompt="ein See")
    # Let A run ahead two steps so the two sit at different timesteps.
    for s in (solo_a, both_a):
        for _ in range(2):
            (p,) = run_unet(model.unet, [s.unet_inputs()])
            s.advance(p)
    assert both_a.timesteps[both_a.index] != both_b.timesteps[both_b.index]
    while not both_b.done:
        pa, pb = run_unet(model.unet, [both_a.unet_inputs(), both_b.unet_inputs()])
        both_a.advance(pa)
        both_b.advance(pb)
        for s in (solo_a, solo_b):
            (p,) = run_unet(model.unet, [s.unet_inputs()])
            s.advance(p)
    torch.testing.assert_close(both_a.latents, solo_a.latents, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both_b.latents, solo_b.latents, atol=1e-4, rtol=1e-4)


def test_native_size_follows_the_model_family():
    def fake(sample_size, blocks):
        pipe = SimpleNamespace(
            unet=SimpleNamespace(config=SimpleNamespace(sample_size=sample_size, in_channels=4)),
            vae=SimpleNamespace(config=SimpleNamespace(block_out_channels=[0] * blocks)),
        )
        return LoadedModel(source=None, pipe=pipe, family="sd", device=torch.device("cpu"),
                           dtype=torch.float32, name="fake")

    assert fake(64, 4).native_size == 512  # SD 1.x
    assert fake(96, 4).native_size == 768  # SD 2.x (768-v)
    assert fake(128, 4).native_size == 1024  # SDXL
    assert fake(32, 2).native_size == 64  # a tiny model: its own size

