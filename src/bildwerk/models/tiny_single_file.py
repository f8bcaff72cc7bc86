"""Tiny single-file checkpoints in the original (LDM/SGM) key layout, for tests and demos.

The files people download from model sites are one ``.safetensors`` in the layout of the
original Stable Diffusion code: the UNet under ``model.diffusion_model.``, the VAE under
``first_stage_model.``, the text side under ``cond_stage_model.`` (SD 1.x: the Hugging Face CLIP
layout; SD 2.x: OpenCLIP's) or ``conditioner.embedders.N.`` (SDXL: CLIP-L, then OpenCLIP bigG).
This module writes a tiny diffusers pipeline in that layout, so loading such files is tested
offline with the same code a real checkpoint takes; the mapping is the inverse of the one
diffusers reads, written from the layouts themselves.

``write_tiny_single_file`` also writes the configs a single file needs (what diffusers would
fetch from the hub for a real one), as a folder a test hands to the loader.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

TinySingleKind = Literal["sd", "sd-inpaint", "sd2-v", "sdxl", "sdxl-inpaint"]
SINGLE_KINDS: tuple[TinySingleKind, ...] = ("sd", "sd-inpaint", "sd2-v", "sdxl", "sdxl-inpaint")
# The configs type (models/single_file.py) each kind loads with.
CONFIG_TYPES: dict[TinySingleKind, str] = {
    "sd": "sd1", "sd-inpaint": "sd1-inpaint", "sd2-v": "sd2", "sdxl": "sdxl", "sdxl-inpaint": "sdxl-inpaint",
}



# ---- building the tiny pipelines ------------------------------------------------------------


def build_tiny_single_pipeline(kind: TinySingleKind, *, seed: int = 0, tokenizer_dir: Path | None = None):
    """A tiny pipeline of ``kind`` whose parts can all be told apart in the original layout.

    SD 1.x and SD-inpaint are models/tiny.py's. The others differ where a single file must
    show it: SD 2.x has an OpenCLIP text side (written in OpenCLIP's layout), linear attention
    projections and v-prediction; SDXL's two text encoders have different widths (as CLIP-L
    and bigG do), which is how a file's text encoders are matched to the pipeline's."""
    from diffusers import (
        DDIMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    from bildwerk.models.tiny import (
        _scheduler,
        _text_encoder,
        _vae,
        build_tiny_pipeline,
        offline_tokenizer,
    )

    if kind in ("sd", "sd-inpaint"):
        return build_tiny_pipeline(kind, seed=seed, tokenizer_dir=tokenizer_dir)
    tok = offline_tokenizer(tokenizer_dir or Path(tempfile.mkdtemp(prefix="bildwerk-tok-")))
    common = dict(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=32,
    )
    if kind == "sd2-v":
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(in_channels=4, cross_attention_dim=32, **common)
        torch.manual_seed(seed)
        vae = _vae()
        torch.manual_seed(seed)
        text_encoder = _text_encoder(32)
        scheduler = DDIMScheduler.from_config(_scheduler().config, prediction_type="v_prediction")
        return StableDiffusionPipeline(
            unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tok, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if kind in ("sdxl", "sdxl-inpaint"):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            in_channels=9 if kind == "sdxl-inpaint" else 4,
            addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 64,  # 6 time ids * 8 + the pooled bigG-like text
            cross_attention_dim=32 + 64, **common)
        torch.manual_seed(seed)
        vae = _vae()
        torch.manual_seed(seed)
        te1 = _text_encoder(32)
        torch.manual_seed(seed + 1)
        te2 = _text_encoder(64, projection=64)
        cls = StableDiffusionXLInpaintPipeline if kind == "sdxl-inpaint" else StableDiffusionXLPipeline
        return cls(unet=unet, vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                   scheduler=_scheduler())
    raise ValueError(f"unknown tiny single-file kind {kind!r}; use one of {', '.join(SINGLE_KINDS)}")


# ---- diffusers -> original layout -----------------------------------------------------------

_UNET_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
}


def _resnet(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    name, _, param = rest.partition(".")
    return dict(table).get(name, name) + "." + param


def unet_to_original(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A diffusers UNet's state dict in the original layout (without the ``model.diffusion_model.`` prefix).

    The original UNet numbers its blocks in one list per direction: ``input_blocks`` is conv_in,
    then per level ``layers_per_block`` (resnet, attention) pairs and a downsampler; the
    ``output_blocks`` have one pair more per level, the upsampler riding on the last one."""
    per = int(config["layers_per_block"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in _UNET_TOP:
            new = _UNET_TOP[parts[0]] + "." + ".".join(parts[1:])
        elif ".".join(parts[:2]) in _UNET_TOP:
            new = _UNET_TOP[".".join(parts[:2])] + "." + ".".join(parts[2:])
        elif parts[0] == "down_blocks":
            level, what = int(parts[1]), parts[2]
            if what == "downsamplers":  # down_blocks.L.downsamplers.0.conv.P
                new = f"input_blocks.{(level + 1) * (per + 1)}.0.op." + parts[-1]
            else:
                index = 1 + level * (per + 1) + int(parts[3])
                rest = ".".join(parts[4:])
                new = (f"input_blocks.{index}.0." + _resnet(rest, _UNET_RESNET) if what == "resnets"
                       else f"input_blocks.{index}.1." + rest)
        elif parts[0] == "mid_block":
            rest = ".".join(parts[3:])
            new = (f"middle_block.{2 * int(parts[2])}." + _resnet(rest, _UNET_RESNET) if parts[1] == "resnets"
                   else "middle_block.1." + rest)
        elif parts[0] == "up_blocks":
            level, what = int(parts[1]), parts[2]
            if what == "upsamplers":
                has_attention = any(k.startswith(f"up_blocks.{level}.attentions.") for k in state)
                new = f"output_blocks.{level * (per + 1) + per}.{2 if has_attention else 1}.conv." + parts[-1]
            else:
                index = level * (per + 1) + int(parts[3])
                rest = ".".join(parts[4:])
                new = (f"output_blocks.{index}.0." + _resnet(rest, _UNET_RESNET) if what == "resnets"
                       else f"output_blocks.{index}.1." + rest)
        else:
            raise ValueError(f"UNet key {key!r} has no place in the original layout")
        out[new] = value
    return out


_VAE_RESNET = (("conv_shortcut", "nin_shortcut"),)
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
_VAE_TOP = {"conv_norm_out": "norm_out"}


def vae_to_original(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """An AutoencoderKL's state dict in the original layout (without ``first_stage_model.``).

    The decoder's levels are numbered from the bottom in the original (``up.0`` is the last to
    run), and the mid-block attention is a 1x1 convolution there, a linear layer in diffusers."""
    levels = len(config["block_out_channels"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        side = parts[0]
        if side in ("quant_conv", "post_quant_conv"):
            new = key
        elif parts[1] in ("conv_in", "conv_out", "conv_norm_out"):
            new = f"{side}.{_VAE_TOP.get(parts[1], parts[1])}.{parts[2]}"
        elif parts[1] in ("down_blocks", "up_blocks"):
            level = int(parts[2])
            where = f"down.{level}" if parts[1] == "down_blocks" else f"up.{levels - 1 - level}"
            if parts[3] in ("downsamplers", "upsamplers"):
                new = f"{side}.{where}.{'downsample' if parts[3] == 'downsamplers' else 'upsample'}.conv.{parts[-1]}"
            else:
                new = f"{side}.{where}.block.{parts[4]}." + _resnet(".".join(parts[5:]), _VAE_RESNET)
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                new = f"{side}.mid.block_{int(parts[3]) + 1}." + _resnet(".".join(parts[4:]), _VAE_RESNET)
            else:  # mid_block.attentions.0.NAME[.0].P
                new = f"{side}.mid.attn_1.{_VAE_ATTENTION[parts[4]]}.{parts[-1]}"
                if parts[4] != "group_norm" and value.ndim == 2:
                    value = value[:, :, None, None]
        else:
            raise ValueError(f"VAE key {key!r} has no place in the original layout")
        out[new] = value
    return out


def _text_model_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 drops CLIPTextModel's ``text_model.`` level; the original files have it.
    return {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
            for k, v in state.items()}


def clip_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIP text model in the Hugging Face layout the SD 1.x and SDXL files keep (``text_model.*``)."""
    return {k: v for k, v in _text_model_keys(state).items() if not k.startswith("text_projection")}


_OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}


def openclip_to_original(state: dict[str, torch.Tensor], hidden: int) -> dict[str, torch.Tensor]:
    """A CLIP text model in OpenCLIP's layout (SD 2.x, SDXL's second encoder): one fused
    ``in_proj`` for q, k, v per block, the projection stored transposed (identity when the
    model has none, as SD 2.x's unused projection)."""
    state = _text_model_keys(state)
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": state["text_model.final_layer_norm.weight"],
        "ln_final.bias": state["text_model.final_layer_norm.bias"],
        "text_projection": (state["text_projection.weight"].T.contiguous() if "text_projection.weight" in state
                            else torch.eye(hidden)),
    }
    layers = sorted({int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers.")})
    for i in layers:
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for param in ("weight", "bias"):
            out[dst + "attn.in_proj_" + param] = torch.cat(
                [state[src + f"self_attn.{p}_proj.{param}"] for p in ("q", "k", "v")], dim=0)
            for ours, theirs in _OPENCLIP_LAYER.items():
                out[dst + theirs + "." + param] = state[src + ours + "." + param]
    return out


def pipeline_to_original(pipe: Any, *, openclip: bool = False) -> dict[str, torch.Tensor]:
    """The whole pipeline as one original-layout state dict, as a model site's file has it;
    ``openclip``: an SD 2.x text side (OpenCLIP's layout) rather than SD 1.x's CLIP."""
    sd: dict[str, torch.Tensor] = {}
    for k, v in unet_to_original(pipe.unet.state_dict(), dict(pipe.unet.config)).items():
        sd["model.diffusion_model." + k] = v
    for k, v in vae_to_original(pipe.vae.state_dict(), dict(pipe.vae.config)).items():
        sd["first_stage_model." + k] = v
    te = pipe.text_encoder.state_dict()
    if getattr(pipe, "text_encoder_2", None) is not None:
        for k, v in clip_to_original(te).items():
            sd["conditioner.embedders.0.transformer." + k] = v
        te2 = pipe.text_encoder_2
        for k, v in openclip_to_original(te2.state_dict(), te2.config.hidden_size).items():
            sd["conditioner.embedders.1.model." + k] = v
    elif openclip:
        for k, v in openclip_to_original(te, pipe.text_encoder.config.hidden_size).items():
            sd["cond_stage_model.model." + k] = v
    else:
        for k, v in clip_to_original(te).items():
            sd["cond_stage_model.transformer." + k] = v
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


# ---- files on disk ---------------------------------------------------------------------------


def write_tiny_single_file(path: Path, kind: TinySingleKind = "sd", *, seed: int = 0,
                           configs: Path | None = None) -> Path:
    """Write a tiny ``kind`` checkpoint as one original-layout ``.safetensors`` at ``path``;
    with ``configs``, also the diffusers configs (and tokenizer) it needs, as a folder there."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bildwerk-tiny-") as tmp:
        pipe = build_tiny_single_pipeline(kind, seed=seed, tokenizer_dir=Path(tmp) / "tok")
        save_file(pipeline_to_original(pipe, openclip=kind == "sd2-v"), str(path))
        if configs is not None:
            write_configs(pipe, Path(configs))
    return path


def write_configs(pipe: Any, folder: Path) -> Path:
    """A pipeline's configs and tokenizers as a diffusers folder without weights."""
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_config(folder)  # model_index.json
    for name, part in pipe.components.items():
        if part is None:
            continue
        if hasattr(part, "save_config"):  # diffusers models and schedulers
            part.save_config(folder / name)
        elif hasattr(part, "config") and hasattr(part.config, "save_pretrained"):  # transformers models
            part.config.save_pretrained(folder / name)
        else:  # tokenizers
            part.save_pretrained(folder / name)
    json.loads((folder / "model_index.json").read_text("utf-8"))  # written whole
    return folder
