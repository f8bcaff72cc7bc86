"""Turn prompts into the UNet's conditioning, per model family.

Kept apart from the denoising loop so other encoders plug in without touching it.
Prompts may carry A1111 weighting (``(word:1.3)``, ``[word]``) and may be longer than
CLIP's 77 tokens: for CLIP encoders those go through compel (weighted token embeddings,
long prompts in 77-token chunks); plain short prompts keep diffusers' own encoding. The
default model's sentence encoder blends weighted phrases itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bildwerk.core.errors import UnsupportedModelError
from bildwerk.core.weights import Segment, is_weighted, parse_weighted
from bildwerk.engines.embeddings import spell_embeddings
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
    if model.family != "sentence":  # textual-inversion words as the tokenizer knows them
        prompt, negative_prompt = spell_embeddings(model, prompt), spell_embeddings(model, negative_prompt)
    segs, neg_segs = parse_weighted(prompt), parse_weighted(negative_prompt)
    prompt, negative_prompt = _plain(segs), _plain(neg_segs)
    if model.family == "sentence":
        # bildwerk's own models: a multilingual sentence encoder, no translation needed.
        encoder = model.extras["encoder"]

        def enc(s: list[Segment]) -> torch.Tensor:
            vec = encoder.encode_weighted([(x.text, x.weight) for x in s])
            return vec.to(model.device, model.dtype).unsqueeze(0).repeat(num_images, 1, 1)

        return Conditioning(enc(segs), enc(neg_segs) if do_cfg else None)
    if _needs_compel(pipe, segs, prompt) or (do_cfg and _needs_compel(pipe, neg_segs, negative_prompt)):
        return _compel_conditioning(model, segs, neg_segs, num_images=num_images, do_cfg=do_cfg,
                                    width=width, height=height)
    if model.family == "sdxl":
        cond, uncond, pooled, pooled_uncond = pipe.encode_prompt(
            prompt=prompt,
            device=model.device,
            num_images_per_prompt=num_images,
            do_classifier_free_guidance=do_cfg,
            negative_prompt=negative_prompt or None,
        )
        time_ids = _time_ids(model, cond.dtype, width, height, num_images)
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


def _plain(segments: list[Segment]) -> str:
    return " ".join("".join(s.text for s in segments).split())


def _time_ids(model: LoadedModel, dtype: torch.dtype, width: int, height: int, n: int) -> torch.Tensor:
    """SDXL's size conditioning: (original size, crop top-left, target size), no crop. Built here
    rather than by the pipeline's helper, whose signature differs between SDXL's text-to-image
    and inpainting pipelines (one set of components serves every mode)."""
    pipe = model.pipe
    ids = [height, width, 0, 0, height, width]
    projection = int(pipe.text_encoder_2.config.projection_dim)
    unet_cfg = pipe.unet.config
    expected = getattr(getattr(pipe.unet, "add_embedding", None), "linear_1", None)
    passed = int(unet_cfg.addition_time_embed_dim) * len(ids) + projection
    if expected is not None and expected.in_features != passed:
        raise UnsupportedModelError(
            f"this SDXL UNet expects {expected.in_features} added conditioning features, not {passed}; "
            "SDXL refiner models (aesthetic-score conditioning) are not supported")
    return torch.tensor([ids], dtype=dtype, device=model.device).repeat(n, 1)


def _needs_compel(pipe: Any, segments: list[Segment], plain: str) -> bool:
    """Weights, or more tokens than the CLIP window holds (diffusers would truncate)."""
    if is_weighted(segments):
        return True
    tokenizer = pipe.tokenizer
    return len(tokenizer(plain, truncation=False).input_ids) > tokenizer.model_max_length


def _compel_conditioning(model: LoadedModel, segs: list[Segment], neg_segs: list[Segment], *,
                         num_images: int, do_cfg: bool, width: int, height: int) -> Conditioning:
    from compel import Compel, ReturnedEmbeddingsType

    pipe = model.pipe
    sdxl = model.family == "sdxl"
    kind = (ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED if sdxl
            else ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED)
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if sdxl:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    compels = [Compel(tokenizer=tok, text_encoder=te, truncate_long_prompts=False, returned_embeddings_type=kind,
                      device=model.device) for tok, te in pairs]

    def embed(c: Compel, s: list[Segment]) -> torch.Tensor:
        # compel does not expand multi-vector embeddings as diffusers' encode_prompt does.
        frags = [spell_embeddings(model, x.text, expand=True) for x in s] or [""]
        weights = [x.weight for x in s] or [1.0]
        return c.conditioning_provider.get_embeddings_for_weighted_prompt_fragments(
            text_batch=[frags], fragment_weights_batch=[weights], device=model.device)

    parts, neg_parts = [], []
    for c in compels:
        pos = embed(c, segs)
        neg = embed(c, neg_segs) if do_cfg else pos
        pos, neg = c.pad_conditioning_tensors_to_same_length([pos, neg])
        parts.append(pos)
        neg_parts.append(neg)
    if sdxl:  # the two encoders may chunk differently: pad to the longer before joining
        longest = max(p.shape[1] for p in parts)
        parts = [_pad_to(c, p, longest) for c, p in zip(compels, parts, strict=True)]
        neg_parts = [_pad_to(c, p, longest) for c, p in zip(compels, neg_parts, strict=True)]
    cond = torch.cat(parts, dim=-1).to(model.dtype).repeat(num_images, 1, 1)
    uncond = torch.cat(neg_parts, dim=-1).to(model.dtype).repeat(num_images, 1, 1) if do_cfg else None
    if not sdxl:
        return Conditioning(cond, uncond)

    provider = compels[1].conditioning_provider
    pooled = provider.get_pooled_embeddings([_plain(segs)], device=model.device)
    negative = _plain(neg_segs)
    pooled_uncond = provider.get_pooled_embeddings([negative], device=model.device) if do_cfg else None
    if do_cfg and not negative and pipe.config.get("force_zeros_for_empty_prompt", False):
        # What diffusers does for SDXL's empty negative prompt: zeros, not the encoded "".
        uncond = torch.zeros_like(cond)
        pooled_uncond = torch.zeros_like(pooled)
    time_ids = _time_ids(model, cond.dtype, width, height, num_images)
    added = {"text_embeds": pooled.to(model.dtype).repeat(num_images, 1), "time_ids": time_ids}
    added_uncond = ({"text_embeds": pooled_uncond.to(model.dtype).repeat(num_images, 1), "time_ids": time_ids}
                    if do_cfg else None)
    return Conditioning(cond, uncond, added, added_uncond)


def _pad_to(c: Any, cond: torch.Tensor, length: int) -> torch.Tensor:
    empty = c.conditioning_provider.empty_z.to(cond.device, cond.dtype)
    while cond.shape[1] < length:
        cond = torch.cat([cond, empty.expand(cond.shape[0], -1, -1)], dim=1)
    return cond
