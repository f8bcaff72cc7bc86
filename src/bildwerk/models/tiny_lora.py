"""Tiny LoRA and textual-inversion files for the tiny models (models/tiny.py), written offline.

They have the key layouts real files have, so the tests load them through the same path as a
LoRA from a model site or from ``bildwerk train --method lora``:

* ``kohya``: what A1111 and ComfyUI users download. SD 1.x/2.x files name UNet modules by their
  diffusers path with ``_`` (``lora_unet_down_blocks_1_attentions_0_..._to_q``); SDXL files use
  the original (sgm) block names (``lora_unet_input_blocks_4_1_...``) and ``lora_te1_`` /
  ``lora_te2_`` for the two text encoders. Each module has ``lora_down``, ``lora_up``, ``alpha``.
* ``diffusers``: what ``bildwerk train --method lora`` writes (``save_lora_weights``: UNet keys
  under ``unet.``, peft's ``lora_A``/``lora_B`` in diffusers' naming).
* embeddings: A1111's ``emb_params`` (SD) and ``clip_l``/``clip_g`` (SDXL).

The weights are random but large enough to change a picture visibly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import torch

LoraLayout = Literal["kohya", "diffusers"]

_ATTN = ("to_q", "to_k", "to_v", "to_out.0")
_TE = ("q_proj", "k_proj", "v_proj", "out_proj")


def _attention_linears(unet: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {name: m for name, m in unet.named_modules()
            if isinstance(m, torch.nn.Linear) and name.endswith(_ATTN) and ".attn" in name}


def _te_linears(text_encoder: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {name: m for name, m in text_encoder.named_modules()
            if isinstance(m, torch.nn.Linear) and name.endswith(_TE)}


def _sgm_name(diffusers_path: str, layers_per_block: int) -> str:
    """``down_blocks.1.attentions.0.X`` -> ``input_blocks.4.1.X`` (SDXL's original names)."""
    m = re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", diffusers_path)
    if m:
        block, layer, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + block * (layers_per_block + 1) + layer}.1.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", diffusers_path)
    if m:
        block, layer, rest = int(m[1]), int(m[2]), m[3]
        return f"output_blocks.{block * (layers_per_block + 1) + layer}.1.{rest}"
    m = re.match(r"mid_block\.attentions\.0\.(.*)", diffusers_path)
    if m:
        return f"middle_block.1.{m[1]}"
    raise ValueError(f"no sgm name for {diffusers_path}")


def _pair(gen: torch.Generator, out_f: int, in_f: int, rank: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    down = torch.randn((rank, in_f), generator=gen) * scale
    up = torch.randn((out_f, rank), generator=gen) * scale
    return down, up


def tiny_lora_state(pipe: Any, *, layout: LoraLayout = "kohya", rank: int = 4, seed: int = 0,
                    scale: float = 0.5, text_encoder: bool = True) -> dict[str, torch.Tensor]:
    """A LoRA state dict for ``pipe`` (a tiny SD or SDXL pipeline) in ``layout``."""
    gen = torch.Generator().manual_seed(seed)
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    lpb = int(pipe.unet.config.layers_per_block)
    out: dict[str, torch.Tensor] = {}
    for path, lin in sorted(_attention_linears(pipe.unet).items()):
        down, up = _pair(gen, lin.out_features, lin.in_features, rank, scale)
        if layout == "kohya":
            name = _sgm_name(path, lpb) if sdxl else path
            key = "lora_unet_" + name.replace(".", "_")
            out[f"{key}.lora_down.weight"], out[f"{key}.lora_up.weight"] = down, up
            out[f"{key}.alpha"] = torch.tensor(float(rank))
        else:
            out[f"unet.{path}.lora.down.weight"], out[f"unet.{path}.lora.up.weight"] = down, up
    if not text_encoder:
        return out
    encoders = [("lora_te1_" if sdxl else "lora_te_", "text_encoder", pipe.text_encoder)]
    if sdxl:
        encoders.append(("lora_te2_", "text_encoder_2", pipe.text_encoder_2))
    for kohya_prefix, diffusers_prefix, te in encoders:
        if te is None:
            continue
        for path, lin in sorted(_te_linears(te).items()):
            down, up = _pair(gen, lin.out_features, lin.in_features, rank, scale)
            if layout == "kohya":
                key = kohya_prefix + path.replace(".", "_")
                out[f"{key}.lora_down.weight"], out[f"{key}.lora_up.weight"] = down, up
                out[f"{key}.alpha"] = torch.tensor(float(rank))
            else:
                out[f"{diffusers_prefix}.{path}.lora_linear_layer.down.weight"] = down
                out[f"{diffusers_prefix}.{path}.lora_linear_layer.up.weight"] = up
    return out


def save_tiny_lora(path: str | Path, pipe: Any, *, layout: LoraLayout = "kohya", rank: int = 4, seed: int = 0,
                   scale: float = 0.5, text_encoder: bool = True) -> Path:
    """Write a tiny LoRA for ``pipe`` as one ``.safetensors`` file (as model sites ship them)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = tiny_lora_state(pipe, layout=layout, rank=rank, seed=seed, scale=scale, text_encoder=text_encoder)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
    return path


def save_tiny_embedding(path: str | Path, pipe: Any, *, vectors: int = 1, seed: int = 0, scale: float = 2.0) -> Path:
    """Write a textual-inversion embedding for ``pipe`` in A1111's safetensors layout."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def vecs(te: Any) -> torch.Tensor:
        return torch.randn((vectors, int(te.config.hidden_size)), generator=gen) * scale

    if getattr(pipe, "text_encoder_2", None) is not None:
        state = {"clip_l": vecs(pipe.text_encoder), "clip_g": vecs(pipe.text_encoder_2)}
    else:
        state = {"emb_params": vecs(pipe.text_encoder)}
    save_file(state, str(path))
    return path


def save_peft_lora(folder: str | Path, pipe: Any, *, rank: int = 4, seed: int = 0) -> Path:
    """Write a UNet LoRA the way ``bildwerk train --method lora`` does (train/unet.py
    ``_export_lora``: a peft adapter, ``save_lora_weights``); returns the ``.safetensors`` file.
    ``pipe``'s UNet is changed (an adapter is added): pass a pipeline built for this."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # gaussian init leaves lora_B at zero: a trained adapter is not
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    folder = Path(folder)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"
