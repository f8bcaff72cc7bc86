"""Latents back into pictures: the VAE decode in batches, and in tiles for big pictures.

``vae_batch`` pictures go through the decoder per call: one on the CPU keeps peak memory flat
(a 1024x1024 SDXL decode holds gigabytes of activations), several on CUDA fill the GPU.
Pictures larger than ``tile_above`` pixels (width x height; 0 = never) decode in overlapping
tiles, blended at their seams (diffusers' ``tiled_decode``), so their memory is that of one
tile. ``tiled_decode`` is called directly rather than through ``enable_tiling()``: that flag
stays on the VAE object, which other jobs (and the encoder) share.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from bildwerk.images.tensors import to_pil
from bildwerk.models.loader import vae_scale_factor


def vae_scale(vae: Any) -> int:
    """Pixels per latent cell along a side."""
    return vae_scale_factor(vae.config.block_out_channels)


def unscale_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """The denoiser's latents (scaled, shifted) as the decoder reads them, in its dtype."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return latents.to(vae.dtype) / vae.config.scaling_factor + shift


def tiles_for(vae: Any, latents: torch.Tensor, tile_above: int) -> bool:
    """Whether pictures of these latents' size decode in tiles (above ``tile_above`` pixels)."""
    if tile_above <= 0 or not hasattr(vae, "tiled_decode"):
        return False
    f = vae_scale(vae)
    return int(latents.shape[-2]) * f * int(latents.shape[-1]) * f > tile_above


@torch.inference_mode()
def decode_latents(vae: Any, latents: torch.Tensor, *, batch: int = 1, tile_above: int = 0) -> list[Image.Image]:
    """Every picture of ``latents`` (n, c, h, w), decoded ``batch`` at a time."""
    tiled = tiles_for(vae, latents, tile_above)
    out: list[Image.Image] = []
    for chunk in latents.split(max(batch, 1)):
        z = unscale_latents(vae, chunk)
        pixels = vae.tiled_decode(z, return_dict=False)[0] if tiled else vae.decode(z, return_dict=False)[0]
        out.extend(to_pil(pixels))
    return out
