"""Reading a LoRA file before it goes near a model: safe format, intact, a LoRA, for which model.

Model sites ship LoRAs in several layouts (kohya/A1111 ``lora_unet_...lora_down``, diffusers/peft
``unet....lora_A``, LyCORIS); diffusers' ``load_lora_weights`` reads them all, but a file for
another architecture either fails deep inside with a size mismatch or matches nothing. So the
file's header is read first (models/inspect.py: its kind, and its family from the width of the
cross-attention key projection, 768 for SD 1.x, 1024 for SD 2.x, 2048 for SDXL, or from SDXL's
second text encoder and block names) and compared with the loaded model's before any weight loads."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from bildwerk.core.errors import UnsafeModelError, UnsupportedModelError

_TE_PREFIXES = ("lora_te", "text_encoder", "te_", "te1", "te2")
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
_WIDTHS = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


@dataclass(frozen=True)
class LoraFile:
    path: Path
    state: dict[str, torch.Tensor]
    family: str | None  # "sd1" | "sd2" | "sdxl" (models/inspect.py's names), None when unknown
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


def read_lora_file(path: Path, name: str) -> LoraFile:
    """The LoRA at ``path`` read safely, or a one-line error saying what is wrong with it. The
    header is read first (models/inspect.py: pickles, truncated files and other kinds refused,
    the family told) so no weight of a wrong file is loaded."""
    from bildwerk.models.inspect import inspect_file

    try:
        info = inspect_file(path)
    except (UnsafeModelError, UnsupportedModelError) as exc:
        raise type(exc)(f"LoRA {name!r}: {exc}") from None
    if info.kind != "lora":
        what = f"{'an' if info.kind[0] in 'aeiou' else 'a'} {info.kind}" if info.kind else "no kind bildwerk uses"
        raise UnsupportedModelError(
            f"LoRA {name!r} ({path.name}) has no LoRA weights: it looks like {what}; checkpoints go in "
            "models/, embeddings in embeddings/")
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors' errors vary: all mean a broken file
        raise UnsupportedModelError(
            f"LoRA {name!r} ({path.name}) is damaged or incomplete ({type(exc).__name__}); download it again"
        ) from None
    width = info.details.get("cross_attention_dim")
    return LoraFile(path=path, state=state, family=info.family, context_width=width,
                    has_text_encoder=bool(info.details.get("text_encoder")),
                    short_hash=tensor_data_hash(path)[:12])


def model_label(family: str, context_width: int) -> str:
    """How a user knows a loaded model's architecture (loader families: sd, sdxl, sentence)."""
    if family == "sdxl":
        return "SDXL"
    if family == "sentence":
        return "bildwerk's sentence-encoder model"
    return FAMILY_LABELS.get(_WIDTHS.get(context_width, ""), "SD 1.x/2.x")


def check_fits(lora: LoraFile, name: str, *, family: str, context_width: int) -> None:
    """Refuse a LoRA made for another architecture, naming both."""
    wrong_family = lora.family is not None and (lora.family == "sdxl") != (family == "sdxl")
    wrong_width = lora.context_width is not None and lora.context_width != context_width
    if wrong_family or wrong_width:
        made_for = FAMILY_LABELS.get(lora.family or "") or f"a model with {lora.context_width}-wide text conditioning"
        raise UnsupportedModelError(
            f"LoRA {name!r} is for {made_for}, the model is {model_label(family, context_width)}; "
            "use a LoRA made for this model")


def without_text_encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(_TE_PREFIXES)}
