"""VAE decode in batches and in tiles (engines/decode.py), and the engine's use of the switches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bildwerk.engines.decode import decode_latents
from bildwerk.engines.speed import SPEED, SpeedSettings, speed_of
from bildwerk.models.tiny import _vae


@pytest.fixture
def tiny_vae():
    torch.manual_seed(0)
    return _vae().eval()  # random weights, 2x per side


def _latents(n: int, side: int = 16) -> torch.Tensor:
    return torch.randn(n, 4, side, side, generator=torch.Generator().manual_seed(n))


@contextlib.contextmanager
def decoder_calls(vae) -> Iterator[list[int]]:
    """The rows of each decoder call made inside."""
    rows: list[int] = []
    hook = vae.decoder.register_forward_hook(lambda _m, args, _out: rows.append(int(args[0].shape[0])))
    try:
        yield rows
    finally:
        hook.remove()


def test_vae_batch_sets_the_rows_per_call_and_keeps_the_pixels(tiny_vae):
    lat = _latents(3)
    with decoder_calls(tiny_vae) as calls:
        one = [np.asarray(im, dtype=int) for im in decode_latents(tiny_vae, lat, batch=1)]
        assert calls == [1, 1, 1]
        three = [np.asarray(im, dtype=int) for im in decode_latents(tiny_vae, lat, batch=3)]
        assert calls[3:] == [3]
        two = decode_latents(tiny_vae, lat, batch=2)
        assert calls[4:] == [2, 1] and len(two) == 3
    # oneDNN picks its convolution blocking by batch size: the decoder's floats differ by ~1e-5
    # (measured), which flips a pixel by one level now and then, never more.
    for a, b in zip(one, three, strict=True):
        assert np.abs(a - b).max() <= 1
        assert (a == b).mean() > 0.99


def test_big_pictures_decode_in_tiles_without_leaving_tiling_on(tiny_vae):
    tiny_vae.tile_sample_min_size, tiny_vae.tile_latent_min_size = 16, 8  # tiles of 16 px
    lat = _latents(1)  # 16x16 latents: a 32x32 picture, 1024 pixels
    with decoder_calls(tiny_vae) as calls:
        whole = decode_latents(tiny_vae, lat, tile_above=0)  # 0: never
        assert calls == [1]
        assert decode_latents(tiny_vae, lat, tile_above=1024)[0].size == (32, 32)  # not above: whole
        assert calls == [1, 1]
        tiled = decode_latents(tiny_vae, lat, tile_above=1023)
        assert len(calls) == 2 + 9  # one decoder call per overlapping tile: 3x3 (at 0, 6, 12)
    assert tiled[0].size == whole[0].size == (32, 32)
    # Random weights normalise each tile on its own statistics, so no likeness to the whole
    # decode is asserted; the tiles did change the picture.
    assert not np.array_equal(np.asarray(tiled[0]), np.asarray(whole[0]))
    assert tiny_vae.use_tiling is False  # other jobs' decodes (and encodes) stay whole
    again = decode_latents(tiny_vae, lat)
    assert np.array_equal(np.asarray(again[0]), np.asarray(whole[0]))


def test_the_engine_decodes_with_the_speed_settings(engine, tiny_models):
    model = engine._model(str(tiny_models["sd"]))
    lat = torch.randn(3, 4, 40, 40, generator=torch.Generator().manual_seed(0))  # 80x80 pictures
    cpu = SpeedSettings().resolve(torch.device("cpu"))
    assert (cpu.vae_batch, cpu.vae_tile_above) == (1, 0)  # CPU: one at a time, never tiled

    def job(speed):  # what _decode reads of a job: its VAE and its model's settings
        return SimpleNamespace(vae=model.vae, model=SimpleNamespace(extras={SPEED: speed}))

    with decoder_calls(model.vae) as calls:
        engine._decode(job(speed_of(model)), lat)
        assert calls == [1, 1, 1]
        engine._decode(job(replace(cpu, vae_batch=8)), lat)
        assert calls[3:] == [3]
        engine._decode(job(replace(cpu, vae_tile_above=64 * 64)), lat[:1])
        # diffusers' tile is the VAE's sample size (64 px, 32 latents, a quarter overlapping):
        # tiles at 0 and 24 along each side.
        assert calls[4:] == [1, 1, 1, 1]
    cuda = SpeedSettings().resolve(torch.device("cuda"))
    assert (cuda.vae_batch, cuda.vae_tile_above) == (8, 2048 * 2048)
