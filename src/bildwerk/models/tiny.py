"""Tiny diffusers pipelines with random weights, built offline from configs.

They have the exact structure of Stable Diffusion 1.x/2.x, SD inpainting
(9-channel UNet) and SDXL, at a size that runs in a fraction of a second on a
CPU. The tests load them through the same code path as real model folders, and
``bildwerk demo`` uses one to exercise every mode when no trained model is
installed. Their images are noise: only the plumbing is real.

The tokenizer is a byte-level CLIP BPE vocabulary with no merges, written to
disk here, so nothing is downloaded; ``model_max_length=77`` as in CLIP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

TinyKind = Literal["sd", "sd-inpaint", "sdxl"]

_SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's reversible byte -> printable-unicode table (same scheme as GPT-2 BPE).
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def write_tokenizer(folder: Path) -> Path:
    """Write a CLIP tokenizer folder (vocab.json, merges.txt, configs) that needs no download."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + list(_SPECIALS)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), "utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", "utf-8")
    (folder / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": _SPECIALS[0],
                "eos_token": _SPECIALS[1],
                "unk_token": _SPECIALS[1],
                "pad_token": _SPECIALS[1],
            }
        ),
        "utf-8",
    )
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "bos_token": _SPECIALS[0],
                "eos_token": _SPECIALS[1],
                "unk_token": _SPECIALS[1],
                "pad_token": _SPECIALS[1],
                "do_lower_case": True,
            }
        ),
        "utf-8",
    )
    return folder


def offline_tokenizer(folder: Path):
    """A CLIP tokenizer from a folder ``write_tokenizer`` fills (nothing downloaded)."""
    from transformers import CLIPTokenizer

    write_tokenizer(folder)
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


VOCAB_SIZE = 2 * 256 + len(_SPECIALS)


def _text_encoder(hidden: int, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        layer_norm_eps=1e-5,
        bos_token_id=VOCAB_SIZE - 2,
        eos_token_id=VOCAB_SIZE - 1,
        pad_token_id=VOCAB_SIZE - 1,
        hidden_act="gelu",
        projection_dim=projection or hidden,
    )
    if projection is not None:
        return CLIPTextModelWithProjection(cfg)
    return CLIPTextModel(cfg)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def build_tiny_pipeline(kind: TinyKind = "sd", *, seed: int = 0, tokenizer_dir: Path | None = None):
    """Build a tiny pipeline object of the given kind with seeded random weights."""
    import tempfile

    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    tok_dir = tokenizer_dir or Path(tempfile.mkdtemp(prefix="bildwerk-tok-"))
    torch.manual_seed(seed)
    if kind in ("sd", "sd-inpaint"):
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=9 if kind == "sd-inpaint" else 4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            norm_num_groups=32,
        )
        torch.manual_seed(seed)
        vae = _vae()
        torch.manual_seed(seed)
        text_encoder = _text_encoder(32)
        cls = StableDiffusionInpaintPipeline if kind == "sd-inpaint" else StableDiffusionPipeline
        return cls(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=offline_tokenizer(tok_dir),
            scheduler=_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    if kind == "sdxl":
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + 32 pooled text
            cross_attention_dim=64,  # 32 + 32 from the two text encoders
            norm_num_groups=32,
        )
        torch.manual_seed(seed)
        vae = _vae()
        torch.manual_seed(seed)
        te1 = _text_encoder(32)
        torch.manual_seed(seed + 1)
        te2 = _text_encoder(32, projection=32)
        tok = offline_tokenizer(tok_dir)
        return StableDiffusionXLPipeline(
            unet=unet,
            vae=vae,
            text_encoder=te1,
            text_encoder_2=te2,
            tokenizer=tok,
            tokenizer_2=tok,
            scheduler=_scheduler(),
        )
    raise ValueError(f"unknown tiny model kind {kind!r}")


def save_tiny_model(folder: str | Path, kind: TinyKind = "sd", *, seed: int = 0) -> Path:
    """Build a tiny pipeline and save it as a diffusers folder with safetensors weights."""
    folder = Path(folder)
    pipe = build_tiny_pipeline(kind, seed=seed, tokenizer_dir=folder / "_tok")
    pipe.save_pretrained(folder, safe_serialization=True)
    import shutil

    shutil.rmtree(folder / "_tok", ignore_errors=True)
    return folder
