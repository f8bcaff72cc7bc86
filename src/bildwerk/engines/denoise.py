"""The denoising loop, with all of its state kept per request.

A ``DenoiseState`` owns its latents, its own scheduler, its timesteps and its
step index. One step is split in two halves: ``unet_inputs()`` says what the
UNet must see, ``advance(noise_pred)`` applies guidance and the scheduler.
Between the halves sits the UNet call, which ``run_unet`` makes for a *list*
of states at once with a per-sample timestep vector: continuous batching across
requests (app/batching.py) puts states of the same model and shape, each at its
own timestep, into one call.

Nothing in a step waits for the device: the scheduler is given the timestep from a host copy
made once (diffusers' schedulers index their host-side tables with it), the UNet its timestep
vector from the device copy, so on CUDA the loop only queues work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from bildwerk.engines.conditioning import Conditioning
from bildwerk.engines.control import ControlSlot, control_residuals
from bildwerk.engines.schedulers import step_accepts_generator
from bildwerk.engines.speed import UNetCall, mark_batch_dynamic


@dataclass
class UNetInputs:
    sample: torch.Tensor  # (b, c, h, w), already scaled by the scheduler
    timestep: torch.Tensor  # (b,) one timestep per sample
    encoder_hidden_states: torch.Tensor
    added_cond_kwargs: dict[str, torch.Tensor] | None = None
    # ControlNet (engines/control.py): per unit, the networks (equal across a call: batch_key),
    # the control maps and the conditioning scale per row (0 outside the unit's window).
    control_nets: tuple[Any, ...] = ()
    control_cond: list[torch.Tensor] = field(default_factory=list)
    control_scale: list[torch.Tensor] = field(default_factory=list)


@dataclass
class DenoiseState:
    scheduler: SchedulerMixin
    timesteps: torch.Tensor
    latents: torch.Tensor  # (n, 4, h, w)
    conditioning: Conditioning
    guidance: float
    generators: list[torch.Generator]
    # Inpainting: 9-channel UNets see mask + masked image; 4-channel ones blend latents.
    mask: torch.Tensor | None = None  # (n, 1, h, w), 1 = repaint
    masked_image_latents: torch.Tensor | None = None
    image_latents: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    unet_in_channels: int = 4
    controls: list[ControlSlot] = field(default_factory=list)
    index: int = 0
    # The scheduler's estimate of the clean latents after the last step, where it gives one
    # (DDIM, Euler, ...): what a progress preview shows. None before the first step.
    denoised: torch.Tensor | None = None
    _extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if step_accepts_generator(self.scheduler):
            self._extra["generator"] = self.generators
        # One copy each way, now, instead of a host-device sync in every step.
        self._t_host = self.timesteps.cpu()
        self._t_device = self.timesteps.to(self.latents.device)

    @property
    def total(self) -> int:
        return len(self.timesteps)

    @property
    def done(self) -> bool:
        return self.index >= self.total

    @property
    def do_cfg(self) -> bool:
        return self.conditioning.uncond is not None

    def unet_inputs(self) -> UNetInputs:
        t = self._t_host[self.index]
        c = self.conditioning
        lat = torch.cat([self.latents, self.latents]) if self.do_cfg else self.latents
        lat = self.scheduler.scale_model_input(lat, t)
        if self.unet_in_channels == 9:
            assert self.mask is not None and self.masked_image_latents is not None
            reps = 2 if self.do_cfg else 1
            lat = torch.cat(
                [lat, self.mask.repeat(reps, 1, 1, 1), self.masked_image_latents.repeat(reps, 1, 1, 1)],
                dim=1,
            )
        ehs = torch.cat([c.uncond, c.cond]) if c.uncond is not None else c.cond
        added = None
        if c.added is not None:
            if c.added_uncond is not None:
                added = {k: torch.cat([c.added_uncond[k], c.added[k]]) for k in c.added}
            else:
                added = c.added
        tvec = self._t_device[self.index : self.index + 1].expand(lat.shape[0])
        rows = lat.shape[0]
        return UNetInputs(
            lat, tvec, ehs, added,
            control_nets=tuple(s.net for s in self.controls),
            control_cond=[s.cond.expand(rows, -1, -1, -1) for s in self.controls],
            control_scale=[torch.full((rows,), s.scale_at(self.index, self.total), device=lat.device)
                           for s in self.controls],
        )

    def advance(self, noise_pred: torch.Tensor) -> None:
        t = self._t_host[self.index]
        if self.do_cfg:
            uncond, cond = noise_pred.chunk(2)
            noise_pred = uncond + self.guidance * (cond - uncond)
        out = self.scheduler.step(noise_pred, t, self.latents, **self._extra, return_dict=True)
        self.latents = out.prev_sample
        self.denoised = getattr(out, "pred_original_sample", None)
        if self.unet_in_channels == 4 and self.mask is not None:
            # Latent blending: keep the known region on the noise level of the next step.
            assert self.image_latents is not None and self.noise is not None
            known = self.image_latents
            if self.index + 1 < self.total:
                nxt = self._t_device[self.index + 1 : self.index + 2]
                known = self.scheduler.add_noise(known, self.noise, nxt)
            self.latents = (1 - self.mask) * known + self.mask * self.latents
        self.index += 1


@torch.inference_mode()
def run_unet(unet: torch.nn.Module | UNetCall, batch: list[UNetInputs]) -> list[torch.Tensor]:
    """One UNet call for many states; returns each state's slice of the prediction.

    The UNet should be batch-invariant (engines/invariance.py), so a state's slice is the same
    whichever states share the call; a lone row is padded to two, as a one-row call takes
    another kernel path. A compiled UNet (engines/speed.py) pads further, to its row bucket,
    so its graphs are few; padding rows repeat the last row and are dropped from the output.
    """
    call = unet if isinstance(unet, UNetCall) else UNetCall(unet)
    sizes = [b.sample.shape[0] for b in batch]
    sample = torch.cat([b.sample for b in batch]) if len(batch) > 1 else batch[0].sample
    timestep = torch.cat([b.timestep for b in batch]) if len(batch) > 1 else batch[0].timestep
    ehs = (torch.cat([b.encoder_hidden_states for b in batch]) if len(batch) > 1
           else batch[0].encoder_hidden_states)
    added = batch[0].added_cond_kwargs
    if added is not None and len(batch) > 1:
        added = {k: torch.cat([b.added_cond_kwargs[k] for b in batch]) for k in added}  # type: ignore[index]
    nets = batch[0].control_nets
    conds = [torch.cat([b.control_cond[k] for b in batch]) for k in range(len(nets))]
    scales = [torch.cat([b.control_scale[k] for b in batch]) for k in range(len(nets))]
    rows = sample.shape[0]
    pad = call.pad_to(rows) - rows
    if pad > 0:
        sample, timestep, ehs = _pad(sample, pad), _pad(timestep, pad), _pad(ehs, pad)
        if added is not None:
            added = {k: _pad(v, pad) for k, v in added.items()}
        conds = [_pad(c, pad) for c in conds]
        scales = [_pad(s, pad) for s in scales]
    if call.mark_dynamic:
        mark_batch_dynamic(sample, timestep, ehs, *(added or {}).values())
    with call.context():
        extra = control_residuals(list(nets), conds, scales, sample, timestep, ehs, added) if nets else {}
        out = call.network(sample, timestep, encoder_hidden_states=ehs, added_cond_kwargs=added,
                           return_dict=False, **extra)[0]
        if call.cuda_graphs:
            out = out.clone()  # a CUDA graph's output is overwritten by its next replay
    if pad > 0:
        out = out[:rows]
    return list(out.split(sizes))


def _pad(t: torch.Tensor, extra: int) -> torch.Tensor:
    """``t`` with its last row repeated ``extra`` times (real values: no NaN from garbage rows)."""
    return torch.cat([t, t[-1:].expand(extra, *t.shape[1:])])
