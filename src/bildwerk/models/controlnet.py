"""ControlNets: found by name, checked against the base model, loaded.

A ControlNet is an asset (models/assets.py): a diffusers ``ControlNetModel`` folder, or one
``.safetensors`` file in the original ``control_model.`` layout (A1111's models/ControlNet) or
in diffusers' layout. A single file has no config; its architecture is the base model's UNet
encoder, so the config is derived from the loaded UNet and the weights are renamed by diffusers'
single-file conversion: nothing is fetched, it works offline. Before any weights are read, the file's tensor
shapes are compared with the base model (text width, SDXL's added embeddings, channel widths),
so an SDXL ControlNet on an SD 1.5 model is one clear error, not a shape trace.
The engine keeps loaded networks (engines/control.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bildwerk.core.errors import UnsafeModelError, UnsupportedModelError
from bildwerk.models.assets import Asset, find_asset
from bildwerk.models.inspect import inspect_file, read_header
from bildwerk.models.safety import WEIGHT_SUFFIXES, sniff_weight_format

# UNet config keys a ControlNet shares with the UNet it was made for (diffusers' from_unet).
_SHARED_KEYS = (
    "encoder_hid_dim", "encoder_hid_dim_type", "addition_embed_type", "addition_time_embed_dim",
    "transformer_layers_per_block", "flip_sin_to_cos", "freq_shift", "down_block_types",
    "only_cross_attention", "block_out_channels", "layers_per_block", "downsample_padding",
    "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim",
    "attention_head_dim", "num_attention_heads", "use_linear_projection", "class_embed_type",
    "num_class_embeds", "upcast_attention", "resnet_time_scale_shift",
    "projection_class_embeddings_input_dim", "mid_block_type",
)


@dataclass(frozen=True)
class Shape:
    """What must agree between a ControlNet and a base UNet for its residuals to fit."""

    context: int | None  # cross-attention width: 768 SD 1.x, 1024 SD 2.x, 2048 SDXL
    sdxl: bool  # SDXL's added text/time embedding
    first_width: int | None  # channels of the first block

    def family(self) -> str:
        if self.sdxl:
            return "SDXL"
        return {768: "SD 1.x", 1024: "SD 2.x"}.get(self.context or 0, f"a {self.context}-wide text encoder")


def controlnet_config_from_unet(unet_config: Any, latent_channels: int = 4, vae_scale: int = 8) -> dict[str, Any]:
    """The diffusers ControlNetModel config that matches a UNet: its encoder's architecture, the
    latent channels as input (an inpainting UNet's 9 are its own: the ControlNet reads latents),
    and a control-picture embedding that halves the picture down to the latents' size (three
    halvings for the VAEs of SD and SDXL: the published ControlNets' 16, 32, 96, 256)."""
    cfg = {k: unet_config[k] for k in _SHARED_KEYS if k in unet_config}
    halvings = max(int(vae_scale).bit_length() - 1, 0)
    cfg.update(_class_name="ControlNetModel", in_channels=latent_channels, conditioning_channels=3,
               controlnet_conditioning_channel_order="rgb",
               conditioning_embedding_out_channels=[16, 32, 96, 256][: halvings + 1])
    return cfg


def unet_shape(unet_config: Any) -> Shape:
    cad = unet_config.get("cross_attention_dim")
    return Shape(context=int(cad) if isinstance(cad, int) else None,
                 sdxl=unet_config.get("addition_embed_type") == "text_time",
                 first_width=int(unet_config["block_out_channels"][0]))


def _file_shape(path: Path) -> Shape:
    """Read the shape from a single file's header (models/inspect.py: pickle, truncated and
    foreign files are refused there, in one line); no weights are loaded."""
    info = inspect_file(path)
    if info.kind != "controlnet":
        what = f"a {info.kind}" if info.kind else "no model file bildwerk uses"
        raise UnsupportedModelError(f"{path.name} is {what}, not a ControlNet; put ControlNets in the controlnet folder")
    shapes = read_header(path).shapes
    context = next((s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight") and len(s) == 2), None)
    sdxl = any("add_embedding." in k or "label_emb." in k for k in shapes)
    first = shapes.get("control_model.input_blocks.0.0.weight") or shapes.get("conv_in.weight")
    return Shape(context, sdxl, first[0] if first else None)


def _folder_shape(folder: Path) -> Shape:
    try:
        cfg = json.loads((folder / "config.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise UnsupportedModelError(f"ControlNet folder {folder.name!r} has no readable config.json") from exc
    if cfg.get("_class_name") not in (None, "ControlNetModel"):
        raise UnsupportedModelError(
            f"{folder.name!r} is a {cfg.get('_class_name')}, not a ControlNetModel; bildwerk loads ControlNets")
    return unet_shape(cfg)


def _check_safe(asset: Asset) -> None:
    files = [asset.path] if asset.path.is_file() else [
        p for p in asset.path.iterdir() if p.suffix in WEIGHT_SUFFIXES]
    safe = [p for p in files if sniff_weight_format(p) == "safetensors"]
    bad = [p for p in files if p.suffix == ".safetensors" and p not in safe]
    if bad or not safe:
        what = f"{bad[0].name} is named .safetensors but is not" if bad else "it has no .safetensors weights"
        raise UnsafeModelError(
            f"refusing ControlNet {asset.name!r}: {what} a safetensors file. bildwerk loads safetensors only "
            "(pickle files can run code); convert it once where you trust it")


def check_fits(asset: Asset, base_unet_config: Any) -> None:
    """Raise UnsupportedModelError unless the ControlNet was made for the base model's family."""
    got = _file_shape(asset.path) if asset.path.is_file() else _folder_shape(asset.path)
    want = unet_shape(base_unet_config)
    if got.context is None and got.first_width is None:
        raise UnsupportedModelError(f"{asset.name!r} does not look like a ControlNet (no UNet encoder weights)")
    if got.sdxl != want.sdxl or (got.context is not None and got.context != want.context):
        raise UnsupportedModelError(
            f"ControlNet {asset.name!r} is for {got.family()} but the model is {want.family()}; "
            "use a ControlNet made for this model's family")
    if got.first_width is not None and got.first_width != want.first_width:
        raise UnsupportedModelError(
            f"ControlNet {asset.name!r} has {got.first_width} channels in its first block but the model "
            f"has {want.first_width}; it was made for another architecture")


def _single_file_state(path: Path, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A single file's weights under diffusers' names. diffusers' own conversion does the
    original layout (and leaves diffusers' as it is); it skips SDXL's added embedding
    (``label_emb``), which its own name table maps, so that is added here."""
    from diffusers.loaders.single_file_utils import (
        DIFFUSERS_TO_LDM_MAPPING,
        convert_controlnet_checkpoint,
    )
    from safetensors.torch import load_file

    state = load_file(str(path))
    converted = convert_controlnet_checkpoint(state, cfg)
    if converted is not state:  # it was in the original layout
        plain = {k.removeprefix("control_model."): v for k, v in state.items()}
        for table in ("addition_embed_type", "class_embed_type"):
            for ours, theirs in DIFFUSERS_TO_LDM_MAPPING["controlnet"][table].items():
                if cfg.get(table) and theirs in plain:
                    converted[ours] = plain[theirs]
    return {k: v for k, v in converted.items() if v is not None}


def _load(asset: Asset, base_unet_config: Any, vae_scale: int, device: torch.device, dtype: torch.dtype):
    from diffusers import ControlNetModel

    if asset.path.is_dir():
        net = ControlNetModel.from_pretrained(str(asset.path), torch_dtype=dtype, use_safetensors=True)
        return net.to(device).eval().requires_grad_(False)
    # The config the file lacks, from the base UNet: nothing is looked up online. Loaded
    # strictly, so a file of another architecture is named, not half loaded.
    cfg = controlnet_config_from_unet(base_unet_config, vae_scale=vae_scale)
    state = _single_file_state(asset.path, cfg)
    net = ControlNetModel.from_config({k: v for k, v in cfg.items() if k != "_class_name"})
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise UnsupportedModelError(
            f"ControlNet {asset.name!r} does not fit this model's architecture ({len(missing)} weights missing, "
            f"{len(unexpected)} unknown, e.g. {example}); use a full ControlNet made for this model's family")
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_controlnet(asset: Asset, base_unet_config: Any, vae_scale: int, device: torch.device,
                    dtype: torch.dtype):
    """Check ``asset`` (safetensors, the base model's family) and load it on ``device``/``dtype``."""
    _check_safe(asset)
    check_fits(asset, base_unet_config)
    try:
        return _load(asset, base_unet_config, vae_scale, device, dtype)
    except UnsupportedModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a truncated or damaged file (safetensors' own error type too)
        raise UnsupportedModelError(
            f"could not load ControlNet {asset.name!r}: {str(exc).splitlines()[0][:300]}") from exc


def find_controlnet(name: str) -> Asset:
    """The ControlNet asset called ``name`` (AssetNotFoundError naming how to list them)."""
    return find_asset("controlnet", name)


def check_controls(names: list[str], model_path: Path | None) -> None:
    """What can be known before loading: each ControlNet exists, is safetensors, and (when the
    base model is a diffusers folder whose UNet config can be read) fits its family."""
    unet_config: dict[str, Any] | None = None
    if model_path is not None and (model_path / "unet" / "config.json").is_file():
        try:
            unet_config = json.loads((model_path / "unet" / "config.json").read_text("utf-8"))
        except (OSError, ValueError):
            unet_config = None
    for name in names:
        asset = find_controlnet(name)
        _check_safe(asset)
        if unet_config is not None:
            check_fits(asset, unet_config)
