"""ControlNet in the denoising loop: networks kept per base model, residuals per step.

Each step, every ControlNet of a request reads the same latents, timestep and text
conditioning as the UNet plus its control map, and returns residuals for the UNet's down and
middle blocks. The conditioning scale is applied per row, so requests with different scales
(or at different points of their [start, end] windows: 0 outside) share one call; with
classifier-free guidance both halves get the residuals, as diffusers does without guess mode.
Residuals of several units are summed. A row whose scale is 0 adds exact zeros, so its
picture is bit-identical to one made without the ControlNet.

Loaded networks are kept in the base model's ``extras`` (a few, least recently used dropped),
so switching base models frees them with it; each is patched batch-invariant like the UNet.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from bildwerk.core.control import ControlUnit
from bildwerk.engines.speed import keep_exact
from bildwerk.models.controlnet import find_controlnet, load_controlnet

MAX_KEPT = 4  # networks kept per base model (an SD 1.5 ControlNet is ~0.7 GB in fp16)
_LOCK = threading.Lock()


@dataclass
class ControlSlot:
    """One unit of one request, ready for the loop."""

    net: Any  # diffusers ControlNetModel
    cond: torch.Tensor  # (1, 3, H, W) in [0, 1], the model's device and dtype
    unit: ControlUnit
    name: str  # the asset's name, for the record

    def scale_at(self, index: int, total: int) -> float:
        return float(self.unit.scale) if self.unit.active(index, total) else 0.0


def controlnet_for(model: Any, name: str) -> tuple[Any, str]:
    """The ControlNet called ``name`` for the loaded base ``model``, loaded once and kept."""
    asset = find_controlnet(name)
    real = asset.path.resolve()  # a linked file is one network
    key = (str(real), real.stat().st_mtime_ns)
    with _LOCK:
        kept: OrderedDict = model.extras.setdefault("controlnets", OrderedDict())
        if key in kept:
            kept.move_to_end(key)
            return kept[key], asset.name
    net = load_controlnet(asset, model.unet.config, model.vae_scale_factor, model.device, model.dtype)
    keep_exact(model, net)  # a seed's picture is the same alone or batched
    with _LOCK:
        kept[key] = net
        while len(kept) > MAX_KEPT:
            kept.popitem(last=False)
    return net, asset.name


def control_residuals(nets: list[Any], conds: list[torch.Tensor], scales: list[torch.Tensor],
                      sample: torch.Tensor, timestep: torch.Tensor, ehs: torch.Tensor,
                      added: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """The UNet's extra keyword arguments from every ControlNet of a call (rows concatenated);
    empty when every row's scale is 0 (outside all windows): nothing to add, nothing to run."""
    down: list[torch.Tensor] | None = None
    mid: torch.Tensor | None = None
    for net, cond, scale in zip(nets, conds, scales, strict=True):
        if not bool(scale.any()):
            continue
        d, m = net(sample[:, : int(net.config.in_channels)], timestep, encoder_hidden_states=ehs,
                   controlnet_cond=cond, conditioning_scale=1.0, added_cond_kwargs=added,
                   return_dict=False)
        w = scale.to(m.dtype).view(-1, 1, 1, 1)
        d = [r * w for r in d]
        m = m * w
        down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
        mid = m if mid is None else mid + m
    if down is None:
        return {}
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
