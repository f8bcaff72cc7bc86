"""Reading a LoRA file before it goes near a model: safe format, intact, a LoRA, for which model.

Model sites ship LoRAs in several layouts (kohya/A1111 ``lora_unet_...lora_down``, diffusers/peft
``unet....lora_A``, LyCORIS); diffusers' ``load_lora_weights`` reads them all, but a file for
another architecture either fails deep inside with a size mismatch or matches nothing. So the
architecture is read here from the weights themselves, from the width of the cross-attention
key projection (the text conditioning's width: 768 for SD 1.x, 1024 for SD 2.x, 2048 for SDXL)
and from the second text encoder's keys (SDXL only), and compared with the model's first.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from bildwerk.core.errors import UnsafeModelError, UnsupportedModelError
from bildwerk.models.safety import sniff_weight_format

_LORA_MARKS = ("lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up", "lora_linear_layer",
               "hada_w1", "lokr_w1", ".diff")
_TE_PREFIXES = ("lora_te", "text_encoder", "te_", "te1", "te2")
_SDXL_TE2 = ("lora_te2_", "text_encoder_2.", "te2.", "te2_")
_DOWN_MARKS = ("lora_down.weight", "lora_A.weight", "lora.down.weight", "lora_A.default.weight")
_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


@dataclass(frozen=True)
class LoraFile:
    path: Path
    state: dict[str, torch.Tensor]
    family: str | None  # "SDXL", "SD 1.x", "SD 2.x", or None (unknown)
    context_width: int | None  # the cross-attention width its UNet part was trained for
    has_text_encoder: bool
    short_hash: str  # A1111's LoRA hash: sha256 of the tensor data (header skipped), 12 hex digits


def tensor_data_hash(path: Path) -> str:
    """sha256 of a safetensors file's data after its header (A1111 and civitai call its first 12
    hex digits the LoRA's hash, so metadata read by those tools finds the same file)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + n)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _width(state: dict[str, torch.Tensor]) -> int | None:
    for key, t in state.items():
        if "attn2" in key and ("to_k" in key or "to_v" in key) and key.endswith(_DOWN_MARKS) and t.dim() >= 2:
            return int(t.shape[1])
    return None


def read_lora_file(path: Path, name: str) -> LoraFile:
    """The LoRA at ``path`` read safely, or a one-line error saying what is wrong with it."""
    fmt = sniff_weight_format(path)
    if fmt != "safetensors":
        raise UnsafeModelError(
            f"LoRA {name!r} ({path.name}) is not a safetensors file (its bytes are {fmt}); bildwerk loads "
            "safetensors only, because pickle files can run code. Convert it where you trust it")
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors' errors vary: all mean a broken file
        raise UnsupportedModelError(
            f"LoRA {name!r} ({path.name}) is damaged or incomplete ({type(exc).__name__}); download it again"
        ) from None
    if not any(m in k for k in state for m in _LORA_MARKS):
        raise UnsupportedModelError(
            f"{path.name} has no LoRA weights (is it a checkpoint or an embedding?); checkpoints go in "
            "models/, embeddings in embeddings/")
    width = _width(state)
    sdxl = any(k.startswith(_SDXL_TE2) for k in state) or any(k.startswith("lora_unet_input_blocks") for k in state)
    family = "SDXL" if sdxl else _WIDTHS.get(width or 0)
    return LoraFile(path=path, state=state, family=family, context_width=width,
                    has_text_encoder=any(k.startswith(_TE_PREFIXES) for k in state),
                    short_hash=tensor_data_hash(path)[:12])


def model_label(family: str, context_width: int) -> str:
    """How a user knows a loaded model's architecture."""
    if family == "sdxl":
        return "SDXL"
    if family == "sentence":
        return "bildwerk's sentence-encoder model"
    return _WIDTHS.get(context_width, "SD 1.x/2.x")


def check_fits(lora: LoraFile, name: str, *, family: str, context_width: int) -> None:
    """Refuse a LoRA made for another architecture, naming both."""
    wrong_family = lora.family == "SDXL" and family != "sdxl" or (
        lora.family is not None and lora.family != "SDXL" and family == "sdxl")
    wrong_width = lora.context_width is not None and lora.context_width != context_width
    if wrong_family or wrong_width:
        made_for = lora.family or f"a model with {lora.context_width}-wide text conditioning"
        raise UnsupportedModelError(
            f"LoRA {name!r} is for {made_for}, the model is {model_label(family, context_width)}; "
            "use a LoRA made for this model")


def without_text_encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(_TE_PREFIXES)}
