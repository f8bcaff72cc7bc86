"""Turn prompts into the UNet's conditioning, per model family.

Kept apart from the denoising loop so other encoders (prompt weighting, the
default model's multilingual sentence encoder) plug in without touching it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bildwerk.models.loader import LoadedModel


@dataclass
class Conditioning:
    """Per-sample conditioning for ``n`` images; ``uncond`` is None without CFG."""

    cond: torch.Tensor  # (n, seq, dim)
    uncond: torch.Tensor | None
    added: dict[str, torch.Tensor] | None = None  # SDXL: text_embeds, time_ids
    added_uncond: dict[str, torch.Tensor] | None = None


@torch.inference_mode()
def encode_prompts(
    model: LoadedModel,
    prompt: str,
    negative_prompt: str,
    *,
    num_images: int,
    do_cfg: bool,
    width: int,
    height: int,
) -> Conditioning:
    pipe = model.pipe
    if model.family == "sentence":
        # bildwerk's own models: a multilingual sentence encoder, no translation needed.
        encoder = model.extras["encoder"]
        cond = encoder.encode([prompt]).to(model.device, model.dtype).repeat(num_images, 1, 1)
        uncond = None
        if do_cfg:
            uncond = encoder.encode([negative_prompt]).to(model.device, model.dtype).repeat(num_images, 1, 1)
        return Conditioning(cond, uncond)
    if model.family == "sdxl":
        cond, uncond, pooled, pooled_uncond = pipe.encode_prompt(
            prompt=prompt,
            device=model.device,
            num_images_per_prompt=num_images,
            do_classifier_free_guidance=do_cfg,
            negative_prompt=negative_prompt or None,
        )
        projection = int(pipe.text_encoder_2.config.projection_dim)
        time_ids = pipe._get_add_time_ids(
            (height, width), (0, 0), (height, width), dtype=cond.dtype, text_encoder_projection_dim=projection
        ).to(model.device)
        time_ids = time_ids.repeat(num_images, 1)
        added = {"text_embeds": pooled.to(model.dtype), "time_ids": time_ids}
        added_uncond = (
            {"text_embeds": pooled_uncond.to(model.dtype), "time_ids": time_ids} if do_cfg else None
        )
        return Conditioning(
            cond.to(model.dtype), uncond.to(model.dtype) if do_cfg else None, added, added_uncond
        )
    cond, uncond = pipe.encode_prompt(
        prompt,
        model.device,
        num_images,
        do_cfg,
        negative_prompt=negative_prompt or None,
    )
    return Conditioning(cond.to(model.dtype), uncond.to(model.dtype) if do_cfg else None)
