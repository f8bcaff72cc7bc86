"""Progress previews without the VAE decoder: a linear map from latent channels to colours.

A latent cell's channels say, roughly linearly, what colour its patch of the picture has. The
map (weights and bias per RGB channel) is *fitted* for each VAE, never taken from a table: its
own encoder encodes a set of solid-colour pictures once, and least squares fits the mean latent
of each to its colour. A preview is then that map on the scheduler's estimate of the clean
latents, clamped, at latent resolution, resized to the picture's size: microseconds of matrix
work instead of a decode (whose cost grows with the picture and, on the CPU, equals one image's
decode), so previews can come often. The map is cached per VAE object in the model's extras;
a job with another VAE (an override) gets that VAE's own map.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from bildwerk.engines.decode import vae_scale
from bildwerk.images.tensors import to_pil

# Per RGB channel, in [0, 1]: 3 levels = 27 solid colours, enough to over-determine the fit
# (channels + 1 unknowns per colour channel) for the 4- and 16-channel VAEs in use. Measured on
# the default model's VAE: 64 colours or 64-pixel pictures fit no better (about 31 of 255
# levels off on unseen colours either way: the linear map's limit) for ten times the pixels.
COLOUR_LEVELS = (0.0, 0.5, 1.0)
FIT_CELLS = 4  # latent cells per side of each colour picture (at least 32 pixels)
FIT_CHUNK = 16  # pictures per encoder call while fitting (bounded memory on the CPU)
PREVIEW_MAPS = "preview_maps"  # model.extras: WeakKeyDictionary VAE -> LatentColours

_fit_lock = threading.Lock()  # previews come from worker threads; each VAE is fitted once


@dataclass(frozen=True)
class LatentColours:
    """colour (3,) = weight (3, C) @ latent (C,) + bias, in the model range [-1, 1]."""

    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def channels(self) -> int:
        return int(self.weight.shape[1])

    def apply(self, latents: torch.Tensor) -> torch.Tensor:
        """(C, h, w) latents -> (3, h, w) colours, clamped to [-1, 1]."""
        lat = latents.detach().float().cpu()
        rgb = torch.einsum("oc,chw->ohw", self.weight, lat) + self.bias[:, None, None]
        return rgb.clamp(-1.0, 1.0)


def colour_grid() -> torch.Tensor:
    """(N, 3) solid colours in [-1, 1]: every combination of ``COLOUR_LEVELS``."""
    levels = list(itertools.product(COLOUR_LEVELS, repeat=3))
    return torch.tensor(levels, dtype=torch.float32) * 2.0 - 1.0


def fit_latent_colours(encode: Callable[[torch.Tensor], torch.Tensor], side: int = 32) -> LatentColours:
    """Least-squares fit of mean latent -> colour over solid-colour pictures of ``side`` pixels
    (a multiple of the VAE's scale factor). ``encode`` turns (n, 3, side, side) pictures in
    [-1, 1] into the denoiser's (scaled) latents: the engine's own encoding, so the map reads
    what the scheduler's estimate holds."""
    colours = colour_grid()
    pictures = colours[:, :, None, None].expand(-1, -1, side, side)
    means = []
    for chunk in pictures.split(FIT_CHUNK):
        lat = encode(chunk.contiguous()).detach().float().cpu()
        h, w = lat.shape[-2:]
        # The middle half: the encoder's zero padding tints the border cells.
        inner = lat[..., h // 4 : h - h // 4, w // 4 : w - w // 4]
        means.append(inner.mean(dim=(2, 3)))
    x = torch.cat(means).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(x, colours.double()).solution  # (C + 1, 3)
    return LatentColours(weight=solution[:-1].T.float().contiguous(), bias=solution[-1].float().contiguous())


def latent_colours(model: Any, vae: Any, encode: Callable[[torch.Tensor], torch.Tensor]) -> LatentColours:
    """``vae``'s map, fitted on first use and kept in ``model.extras`` while the VAE lives."""
    with _fit_lock:
        maps = model.extras.setdefault(PREVIEW_MAPS, weakref.WeakKeyDictionary())
        found = maps.get(vae)
        if found is None:
            side = max(32, FIT_CELLS * vae_scale(vae))
            with torch.inference_mode():
                found = maps[vae] = fit_latent_colours(encode, side)
        return found


def approx_preview(colours: LatentColours, latents: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """The first picture of ``latents`` (n, C, h, w) through the map, resized to ``size``
    (width, height) with a cheap bilinear filter: a preview, not the picture."""
    with torch.inference_mode():
        rgb = colours.apply(latents[0])
    picture = to_pil(rgb[None])[0]
    return picture if picture.size == size else picture.resize(size, Image.BILINEAR)
