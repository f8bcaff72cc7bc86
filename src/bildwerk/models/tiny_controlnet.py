"""Tiny random-weight ControlNets for the tiny models (models/tiny.py), written offline.

Built from a tiny pipeline's UNet config (models/controlnet.py derives the same config for a
single file), with every weight random: a trained ControlNet's zero convolutions start at zero
and would change nothing, so they get random values too. Written as a diffusers folder or as
one safetensors file in diffusers' key layout or in the original ``control_model.`` layout
(what A1111's models/ControlNet holds), so the tests load each form offline.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

import torch

from bildwerk.models.controlnet import controlnet_config_from_unet
from bildwerk.models.tiny import TinyKind, build_tiny_pipeline


@cache
def _unet_config(base: TinyKind) -> dict[str, Any]:
    return dict(build_tiny_pipeline(base).unet.config)


def build_tiny_controlnet(kind: TinyKind = "sd", *, seed: int = 0):
    """A ControlNetModel that fits the tiny ``kind`` model (sd and sd-inpaint share one)."""
    from diffusers import ControlNetModel

    base = "sdxl" if kind == "sdxl" else "sd"
    unet_config = _unet_config(base)  # type: ignore[arg-type]  # the architecture; seeds do not change it
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
                         layout: Literal["folder", "file", "original"] = "folder") -> Path:
    """Write a tiny ControlNet as a diffusers folder at ``target``, or as ``target`` (a
    .safetensors file in diffusers' key layout, or in the original layout)."""
    net = build_tiny_controlnet(kind, seed=seed)
    target = Path(target)
    if layout == "folder":
        net.save_pretrained(target, safe_serialization=True)
        return target
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if layout == "original":
        state = to_original_layout(state, int(net.config.layers_per_block))
    save_file(state, str(target))
    return target


_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_FIXED = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0", "controlnet_cond_embedding.conv_in": "input_hint_block.0",
    "controlnet_cond_embedding.conv_out": "input_hint_block.14", "controlnet_mid_block": "middle_block_out.0",
}


def _resnet(rest: str) -> str:
    for new, old in _RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def _original_key(key: str, per_block: int) -> str:
    module, _, param = key.rpartition(".")
    if module in _FIXED:
        return f"{_FIXED[module]}.{param}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)", module):
        return f"input_hint_block.{2 * (int(m[1]) + 1)}.{param}"
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)", module):
        return f"zero_convs.{m[1]}.0.{param}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", module):
        return f"input_blocks.{(int(m[1]) + 1) * (per_block + 1)}.0.op.{param}"
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block = 1 + int(m[1]) * (per_block + 1) + int(m[3])
        return (f"input_blocks.{block}.0.{_resnet(m[4])}" if m[2] == "resnets"
                else f"input_blocks.{block}.1.{m[4]}")
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    raise ValueError(f"no original-layout name for {key}")


def to_original_layout(state: dict[str, Any], layers_per_block: int) -> dict[str, Any]:
    """A diffusers ControlNet state dict under the original names (``control_model.`` prefixed):
    the inverse of the conversion diffusers' single-file loader applies."""
    return {"control_model." + _original_key(k, layers_per_block): v for k, v in state.items()}
