"""The hires fix's upscaling step, between the two denoising passes of one job.

Latent upscalers interpolate the first pass's latents with torch (A1111's "Latent" modes);
picture upscalers (Lanczos, nearest) work on the decoded picture, which the engine encodes
again. Both cut the overhang when the target's aspect differs from the first picture's
(core/hires.py ``HiresSizes.crop``). Each job's tensors are its own, so the result does not
depend on which other jobs share its UNet calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from bildwerk.core.hires import LATENT_MODES, HiresFix, HiresSizes


@dataclass
class HiresPass:
    """A job's second pass, planned at prepare: started once the first pass is done."""

    hires: HiresFix
    sizes: HiresSizes
    steps: int  # the second pass's schedule length (steps x strength of them run)
    total: int  # the denoising steps it will run (its timesteps)
    first_total: int  # the first pass's
    started: bool = False
    seconds: float = 0.0  # upscaling (and, for picture upscalers, decode + encode)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        h = self.hires
        return {"first_size": list(self.sizes.first), "upscaled_size": list(self.sizes.upscaled),
                "size": list(self.sizes.final), "upscaler": h.upscaler, "strength": h.strength,
                "steps": self.steps, "denoising_steps": self.total,
                **({"prompt": h.prompt} if h.prompt is not None else {}),
                **({"negative_prompt": h.negative_prompt} if h.negative_prompt is not None else {})}


def _crop_box(size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) that cut ``crop`` pixels, half on each side (the extra one at the end)."""
    left, top = crop[0] // 2, crop[1] // 2
    return left, top, size[0] - (crop[0] - left), size[1] - (crop[1] - top)


def upscale_latents(latents: torch.Tensor, sizes: HiresSizes, upscaler: str, factor: int) -> torch.Tensor:
    """The first pass's latents at the second pass's size (interpolated in fp32, then cropped)."""
    mode, antialias = LATENT_MODES[upscaler]
    up_w, up_h = sizes.upscaled[0] // factor, sizes.upscaled[1] // factor
    kw: dict = {"antialias": antialias}
    if mode in ("bilinear", "bicubic"):
        kw["align_corners"] = False
    else:
        kw = {}
    out = F.interpolate(latents.float(), size=(up_h, up_w), mode=mode, **kw).to(latents.dtype)
    crop = (sizes.crop[0] // factor, sizes.crop[1] // factor)
    if crop != (0, 0):
        left, top, right, bottom = _crop_box((up_w, up_h), crop)
        out = out[:, :, top:bottom, left:right]
    return out.contiguous()


def upscale_picture(image: Image.Image, sizes: HiresSizes, upscaler: str) -> Image.Image:
    """The first picture at the second pass's size by Pillow (Lanczos or nearest), then cropped."""
    method = Image.LANCZOS if upscaler == "lanczos" else Image.NEAREST
    out = image.resize(sizes.upscaled, method)
    if sizes.crop != (0, 0):
        out = out.crop(_crop_box(sizes.upscaled, sizes.crop))
    return out
