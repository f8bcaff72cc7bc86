"""What a ``.safetensors`` file is, told from its header alone (no weights are read).

A user's folders hold full checkpoints, LoRAs, embeddings, ControlNets and VAEs side by side,
often with names that say nothing. The safetensors header (a JSON table of tensor names,
shapes and dtypes after an 8-byte length) is enough to tell them apart and to name the base
architecture, so listings stay fast on folders of many gigabytes and a wrong file is refused
before any weight is loaded.

Full checkpoints are classified by diffusers' own detection
(``infer_diffusers_model_type``), fed with meta tensors of the header's shapes, so bildwerk and
the loader agree; its rules look at keys of full-size models only, so a small model (a test's
tiny one) is also placed by which text encoder layout it carries.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bildwerk.core.errors import UnsafeModelError, UnsupportedModelError
from bildwerk.models.assets import AssetKind
from bildwerk.models.safety import sniff_weight_format

# A real SDXL checkpoint's header is a few hundred KiB; anything far larger is not one we read.
MAX_HEADER_BYTES = 64 * 1024 * 1024
UNET_PREFIX = "model.diffusion_model."

# diffusers' model types of the UNet families bildwerk drives -> (family, variant).
_DIFFUSERS_TYPES: dict[str, tuple[str, str | None]] = {
    "v1": ("sd1", None),
    "inpainting": ("sd1", "inpaint"),
    "v2": ("sd2", None),
    "inpainting_v2": ("sd2", "inpaint"),
    "xl_base": ("sdxl", None),
    "xl_inpaint": ("sdxl", "inpaint"),
    "xl_refiner": ("sdxl", "refiner"),
    "playground-v2-5": ("sdxl", "playground"),
}
# Text-encoder width -> family: CLIP ViT-L (SD 1.x), OpenCLIP ViT-H (SD 2.x), both SDXL encoders.
_CROSS_ATTENTION_FAMILY = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_EMBEDDING_FAMILY = {768: "sd1", 1024: "sd2"}
_EMBEDDING_KEYS = ("emb_params", "clip_l", "clip_g")


@dataclass(frozen=True)
class FileInfo:
    kind: AssetKind | None  # None: a safetensors file of no kind bildwerk uses
    family: str | None  # "sd1" | "sd2" | "sdxl"; None when unknown
    variant: str | None = None  # "inpaint", "v", "refiner"; LoRA layouts "kohya" | "diffusers" | "peft"
    details: dict = field(default_factory=dict)  # small JSON-safe facts


@dataclass(frozen=True)
class Header:
    shapes: dict[str, list[int]]
    metadata: dict[str, str]


def read_header(path: Path) -> Header:
    """The tensor shapes and metadata of a safetensors file, or one clear error naming it."""
    path = Path(path)
    try:
        fmt = sniff_weight_format(path)
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if fmt != "safetensors":
                if fmt == "pickle":
                    raise UnsafeModelError(
                        f"{path.name} is a pickle file (whatever its name says), which bildwerk never loads "
                        "because it can run code; convert it to .safetensors where you trust it")
                raise UnsupportedModelError(
                    f"{path.name} is not a safetensors file ({fmt} bytes); bildwerk reads .safetensors weights only")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER_BYTES:
                raise UnsupportedModelError(f"{path.name} has a safetensors header of {length} bytes; not a model file")
            raw = f.read(length)
    except OSError as exc:
        raise UnsupportedModelError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    broken = f"{path.name} is truncated or corrupt (its safetensors header does not read); download or copy it again"
    if len(raw) < length:
        raise UnsupportedModelError(broken)
    try:
        table = json.loads(raw)
    except ValueError:
        raise UnsupportedModelError(broken) from None
    if not isinstance(table, dict):
        raise UnsupportedModelError(broken)
    meta = table.pop("__metadata__", None) or {}
    shapes: dict[str, list[int]] = {}
    end = 0
    for key, entry in table.items():
        try:
            shapes[key] = [int(n) for n in entry["shape"]]
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise UnsupportedModelError(broken) from None
    if 8 + length + end > size:  # the header promises more bytes than the file holds
        raise UnsupportedModelError(
            f"{path.name} is truncated ({size} bytes, its header needs {8 + length + end}); download or copy it again")
    return Header(shapes, {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {})


def inspect_file(path: Path) -> FileInfo:
    """What ``path`` is (kind, base family, variant), read from its header only; remembered
    while the file's size and modification time stay (a request resolves its model often)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise UnsupportedModelError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    info = _inspect_cached(str(path.absolute()), st.st_size, st.st_mtime_ns)
    return replace(info, details=dict(info.details))  # the cached facts stay as read


@functools.lru_cache(maxsize=256)
def _inspect_cached(path: str, size: int, mtime_ns: int) -> FileInfo:
    del size, mtime_ns  # part of the cache key only
    return _inspect(Path(path))


def _inspect(path: Path) -> FileInfo:
    header = read_header(path)
    shapes = header.shapes
    keys = list(shapes)
    if any(k.startswith(UNET_PREFIX) for k in keys):
        return _checkpoint(shapes)
    if any(k.startswith("control_model.") or k.startswith("controlnet_cond_embedding.") for k in keys):
        return _controlnet(shapes)
    if any(_is_lora_key(k) for k in keys):
        return _lora(shapes)
    embedding = _embedding(shapes)
    if embedding is not None:
        return embedding
    vae = _vae(shapes)
    if vae is not None:
        return vae
    return FileInfo(None, None, details={"tensors": len(shapes)})


# ---- full checkpoints -------------------------------------------------------------------


def _diffusers_type(shapes: dict[str, list[int]]) -> str | None:
    """diffusers' own name for the model type, from meta tensors (no memory, no weights)."""
    try:
        import torch
        from diffusers.loaders.single_file_utils import infer_diffusers_model_type

        meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        return str(infer_diffusers_model_type(meta))
    except Exception:  # noqa: BLE001 - a rule of theirs that needs values: we decide from keys below
        return None


def _checkpoint(shapes: dict[str, list[int]]) -> FileInfo:
    first = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    in_channels = first[1] if first and len(first) == 4 else None
    cross = _cross_attention_dim(shapes, UNET_PREFIX)
    model_type = _diffusers_type(shapes)
    family, variant = _DIFFUSERS_TYPES.get(model_type or "", (None, None))
    # diffusers' rules key on full-size layers (the 10th OpenCLIP block, 1024-wide attention);
    # the text encoder's layout says the same for any size.
    if any(k.startswith("conditioner.embedders.1.") for k in shapes):
        family = "sdxl"
    elif any(k.startswith("conditioner.embedders.0.model.") for k in shapes) and family is None:
        family, variant = "sdxl", "refiner"
    elif any(k.startswith("cond_stage_model.model.") for k in shapes):
        family = "sd2"
    elif family is None and any(k.startswith("cond_stage_model.transformer.") for k in shapes):
        family = "sd1"
    elif family is None and cross in _CROSS_ATTENTION_FAMILY:
        family = _CROSS_ATTENTION_FAMILY[cross]
    if in_channels == 9:
        variant = "inpaint"
    elif "v_pred" in shapes:  # a marker tensor some v-prediction checkpoints carry
        variant = "v"
    details: dict[str, Any] = {
        "diffusers_type": model_type,
        "unet_in_channels": in_channels,
        "cross_attention_dim": cross,
        "has_vae": any(k.startswith("first_stage_model.") for k in shapes),
        "has_text_encoder": any(k.startswith(("cond_stage_model.", "conditioner.")) for k in shapes),
    }
    if "v_pred" in shapes:
        details["prediction_type"] = "v_prediction"
    if model_type is not None and model_type not in _DIFFUSERS_TYPES and family is None:
        details["unsupported"] = model_type  # an architecture bildwerk does not drive (SD3, Flux, ...)
    return FileInfo("checkpoint", family, variant, details)


def _cross_attention_dim(shapes: dict[str, list[int]], prefix: str = "") -> int | None:
    for key, shape in shapes.items():
        if key.startswith(prefix) and key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return shape[1]
    return None


# ---- ControlNet -----------------------------------------------------------------------


def _controlnet(shapes: dict[str, list[int]]) -> FileInfo:
    original = any(k.startswith("control_model.") for k in shapes)
    cross = _cross_attention_dim(shapes)
    family = _CROSS_ATTENTION_FAMILY.get(cross or 0)
    if any(k.startswith(("add_embedding.", "control_model.label_emb.")) for k in shapes):
        family = "sdxl"  # SDXL's size/crop conditioning
    hint = shapes.get("control_model.input_hint_block.0.weight") or shapes.get("controlnet_cond_embedding.conv_in.weight")
    details = {"cross_attention_dim": cross, "conditioning_channels": hint[1] if hint and len(hint) == 4 else None}
    return FileInfo("controlnet", family, "original" if original else "diffusers", details)


# ---- LoRA -----------------------------------------------------------------------------

_KOHYA = re.compile(r"^lora_(unet|te\d?)_")


def _is_lora_key(key: str) -> bool:
    return bool(_KOHYA.match(key)) or ".lora_A." in key or ".lora_B." in key or ".lora.down." in key \
        or ".lora.up." in key or ".lora_down." in key or ".lora_up." in key or ".lora_linear_layer." in key


def _lora_down(key: str) -> bool:
    return key.endswith(("lora_down.weight", "lora_A.weight", "lora.down.weight"))


def _lora(shapes: dict[str, list[int]]) -> FileInfo:
    keys = list(shapes)
    if any(_KOHYA.match(k) for k in keys):
        variant = "kohya"
    elif any(".lora_A." in k or ".lora_B." in k for k in keys):
        variant = "peft"
    else:
        variant = "diffusers"
    family: str | None = None
    sdxl_text = any(k.startswith(("lora_te2_", "text_encoder_2.", "lora_te1_")) for k in keys)
    # kohya's SDXL LoRAs name the UNet's blocks in the original layout (input_blocks, ...).
    sdxl_unet = any(k.startswith(("lora_unet_input_blocks_", "lora_unet_output_blocks_")) for k in keys)
    cross = next((s[1] for k, s in shapes.items()
                  if _lora_down(k) and ("attn2_to_k" in k or "attn2.to_k" in k) and len(s) >= 2), None)
    if sdxl_text or sdxl_unet:
        family = "sdxl"
    elif cross in _CROSS_ATTENTION_FAMILY:
        family = _CROSS_ATTENTION_FAMILY[cross]
    else:
        te_width = next((s[1] for k, s in shapes.items()
                         if _lora_down(k) and ("mlp_fc1" in k or "mlp.fc1" in k) and len(s) >= 2), None)
        family = _EMBEDDING_FAMILY.get(te_width or 0)
    ranks = sorted({s[0] for k, s in shapes.items() if _lora_down(k) and s})
    details: dict[str, Any] = {
        "rank": ranks[-1] if ranks else None,
        "cross_attention_dim": cross,
        "unet": any(k.startswith(("lora_unet_", "unet.")) for k in keys),
        "text_encoder": any(k.startswith(("lora_te", "text_encoder")) for k in keys),
    }
    if any(("hada_" in k or "lokr_" in k) for k in keys):
        details["lycoris"] = True
    return FileInfo("lora", family, variant, details)


# ---- textual-inversion embeddings -----------------------------------------------------


def _embedding(shapes: dict[str, list[int]]) -> FileInfo | None:
    keys = set(shapes)
    if {"clip_l", "clip_g"} <= keys:  # SDXL: one vector set per text encoder
        vectors = shapes["clip_l"][0] if len(shapes["clip_l"]) == 2 else 1
        return FileInfo("embedding", "sdxl", None, {"vectors": vectors, "layout": "sdxl"})
    if "emb_params" in keys or any(k.startswith("string_to_param") for k in keys):
        key = "emb_params" if "emb_params" in keys else next(k for k in keys if k.startswith("string_to_param"))
        shape = shapes[key]
        dim = shape[-1] if shape else None
        vectors = shape[0] if len(shape) == 2 else 1
        return FileInfo("embedding", _EMBEDDING_FAMILY.get(dim or 0), None,
                        {"vectors": vectors, "dim": dim, "layout": "a1111"})
    # diffusers' learned_embeds: a few tensors named by their token ("<cat-toy>": [dim]).
    if 0 < len(keys) <= 8 and all("." not in k and 1 <= len(s) <= 2 for k, s in shapes.items()):
        dims = {s[-1] for s in shapes.values()}
        if len(dims) == 1:
            dim = dims.pop()
            vectors = sum(s[0] if len(s) == 2 else 1 for s in shapes.values())
            return FileInfo("embedding", _EMBEDDING_FAMILY.get(dim), None,
                            {"vectors": vectors, "dim": dim, "tokens": sorted(keys), "layout": "diffusers"})
    return None


# ---- VAEs ----------------------------------------------------------------------------


def _vae(shapes: dict[str, list[int]]) -> FileInfo | None:
    for prefix in ("first_stage_model.", "vae.", ""):
        conv = shapes.get(prefix + "decoder.conv_in.weight")
        if conv is not None:
            diffusers = any(k.startswith(prefix + "decoder.up_blocks.") for k in shapes)
            latent = conv[1] if len(conv) == 4 else None
            # SD 1.x, 2.x and SDXL share the 4-channel VAE shape; which one it was trained for
            # is not in the shapes (the SDXL VAE's weights differ, its layout does not).
            return FileInfo("vae", None, "diffusers" if diffusers else "original", {"latent_channels": latent})
    return None
