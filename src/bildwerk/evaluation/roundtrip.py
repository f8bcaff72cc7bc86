"""Real pictures through a model's VAE: the ceiling for anything its UNet can make.

Every generated picture is a decoded latent, so the judge's accuracy on real pictures
after encode -> decode bounds what the UNet can reach through that VAE. It tells a
weak decoder apart from a weak UNet (the default model's first decoder alone cost the
judge a third of its held-out accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bildwerk.images.io import to_rgb
from bildwerk.images.tensors import from_pil, to_pil
from bildwerk.train.vae import load_vae, reconstruct, vae_folder

PAD_TO = 8  # covers the VAE factors in use (4 for bildwerk's own models, 8 for Stable Diffusion)


def _pad_white(image: Image.Image, multiple: int) -> Image.Image:
    """Pad right and bottom with white to sides the VAE can encode; cropped off after decoding."""
    w, h = image.size
    pw, ph = -(-w // multiple) * multiple, -(-h // multiple) * multiple
    if (pw, ph) == (w, h):
        return image
    canvas = Image.new("RGB", (pw, ph), (255, 255, 255))
    canvas.paste(image, (0, 0))
    return canvas


class VaeRoundTrip:
    """Encode (posterior mean) and decode pictures with one VAE, on the CPU, in fp32."""

    def __init__(self, model: str | Path | None = None, *, batch_size: int = 32) -> None:
        from bildwerk.models.loader import EMBEDDED_DEFAULT

        self.path = vae_folder(Path(model) if model is not None else EMBEDDED_DEFAULT)
        self.vae = load_vae(self.path).eval()
        self.batch_size = batch_size
        self._psnr: list[float] = []

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        sizes = [im.size for im in images]
        rgb = [_pad_white(to_rgb(im), PAD_TO) for im in images]
        out: list[Image.Image | None] = [None] * len(rgb)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(rgb):
            by_size.setdefault(im.size, []).append(i)
        for indices in by_size.values():  # a batch holds pictures of one size
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start:start + self.batch_size]
                y, psnr = reconstruct(self.vae, from_pil([rgb[i] for i in batch]))
                self._psnr.extend(psnr.tolist())
                for i, im in zip(batch, to_pil(y), strict=True):
                    out[i] = im.crop((0, 0, *sizes[i]))
        return [im for im in out if im is not None]

    @property
    def psnr_db(self) -> float | None:
        """Mean reconstruction PSNR (dB, over pictures) of everything passed so far."""
        return float(np.mean(self._psnr)) if self._psnr else None
