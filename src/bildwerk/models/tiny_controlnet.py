"""Tiny random-weight ControlNets for the tiny models (models/tiny.py), written offline.

Built from a tiny pipeline's UNet config (models/controlnet.py derives the same config for a
single file), with every weight random: a trained ControlNet's zero convolutions start at zero
and would change nothing, so they get random values too. Written as a diffusers folder or as
one safetensors file in diffusers' key layout, as ControlNets are shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from bildwerk.models.controlnet import controlnet_config_from_unet
from bildwerk.models.tiny import TinyKind, build_tiny_pipeline


def build_tiny_controlnet(kind: TinyKind = "sd", *, seed: int = 0):
    """A ControlNetModel that fits the tiny ``kind`` model (sd and sd-inpaint share one)."""
    from diffusers import ControlNetModel

    base = "sdxl" if kind == "sdxl" else "sd"
    unet_config = build_tiny_pipeline(base, seed=seed).unet.config  # type: ignore[arg-type]
    cfg = controlnet_config_from_unet(unet_config, vae_scale=2)  # the tiny VAE halves once
    cfg.pop("_class_name")
    torch.manual_seed(seed + 1000)
    net = ControlNetModel(**cfg)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 2000)
        for p in net.parameters():  # the zero convs too, so the tiny network steers
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return net.eval()


def save_tiny_controlnet(target: str | Path, kind: TinyKind = "sd", *, seed: int = 0,
                         layout: Literal["folder", "file"] = "folder") -> Path:
    """Write a tiny ControlNet as a diffusers folder at ``target``, or as ``target`` (a
    .safetensors file in diffusers' key layout)."""
    net = build_tiny_controlnet(kind, seed=seed)
    target = Path(target)
    if layout == "folder":
        net.save_pretrained(target, safe_serialization=True)
        return target
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(target))
    return target
