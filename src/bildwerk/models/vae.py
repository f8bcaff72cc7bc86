"""A VAE other than the model's own: by name, per request or per model, loaded once and kept.

People swap VAEs as A1111 does (``vae-ft-mse-840000-ema-pruned.safetensors`` for washed-out SD
1.x colours, an fp16-safe SDXL VAE). A VAE is an asset (models/assets.py): a diffusers
``AutoencoderKL`` folder, or one ``.safetensors`` file in diffusers' layout or the original
(``encoder.down.*``, ``first_stage_model.*``) one. A single file is built with the *base model's*
VAE config through diffusers' single-file loading (its key converter), so it loads offline.

Only the VAE changes: the UNet call does not, so jobs with different VAEs still share UNet calls;
each job encodes and decodes with its own (``LocalJob.vae``). The VAE's shapes are checked
against the model's (latent channels, blocks); an SD 1.x and an SDXL VAE have the same shapes,
so that mistake cannot be told from the file and shows as a washed-out or noisy picture.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bildwerk.core.errors import UnsafeModelError, UnsupportedModelError
from bildwerk.models.assets import Asset, AssetNotFoundError, find_asset
from bildwerk.models.safety import sniff_weight_format

# bildwerk.json of a model may name its VAE: {"vae": "NAME"}.
CONFIG_KEY = "vae"
_WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class VaeChoice:
    """Which VAE a job uses and why (its record says so)."""

    name: str
    origin: str  # "request" or "model" (the model's bildwerk.json)
    asset: Asset

    def describe(self) -> dict[str, str]:
        kind = "folder" if self.asset.is_folder else "file"
        return {"name": self.name, "from": self.origin, "kind": kind}


def _weights_of(asset: Asset) -> tuple[Path, str | None]:
    """The safetensors file to check and the folder's subfolder, if a folder."""
    if not asset.is_folder:
        return asset.path, None
    sub = "vae" if (asset.path / "vae" / "config.json").is_file() else None
    return (asset.path / sub / _WEIGHTS) if sub else (asset.path / _WEIGHTS), sub


def check_vae_file(asset: Asset) -> None:
    """Refuse what is not real safetensors (a pickle renamed, an empty or cut file) by its bytes."""
    weights, _ = _weights_of(asset)
    try:
        fmt = sniff_weight_format(weights)
    except OSError:
        raise UnsupportedModelError(
            f"VAE {asset.name!r} has no {_WEIGHTS}; a VAE folder is a diffusers AutoencoderKL "
            "folder (config.json + safetensors weights)") from None
    if fmt != "safetensors":
        raise UnsafeModelError(
            f"VAE {asset.name!r} is not a safetensors file (its bytes are {fmt}); bildwerk loads "
            "safetensors only, because pickle files can run code: convert it where you trust it")


def choose_vae(requested: str | None, config: dict[str, Any], *, model_name: str = "the model") -> VaeChoice | None:
    """The VAE a request asks for, else the one the model's bildwerk.json names, else None (the
    model's own). Raises AssetNotFoundError / UnsafeModelError before anything loads."""
    named = config.get(CONFIG_KEY) if isinstance(config.get(CONFIG_KEY), str) else None
    if named is not None and named.strip().lower() in ("", "auto", "automatic", "none"):
        named = None
    if requested is None and named is None:
        return None
    name, origin = (requested, "request") if requested is not None else (named, "model")
    assert name is not None
    try:
        asset = find_asset("vae", name)
    except AssetNotFoundError as exc:
        if origin == "model":
            raise AssetNotFoundError(f"{exc} (the VAE named in {model_name}'s bildwerk.json)") from None
        raise
    check_vae_file(asset)
    return VaeChoice(name=asset.name, origin=origin, asset=asset)


def _cache_key(asset: Asset) -> tuple[str, int, int]:
    weights, _ = _weights_of(asset)
    st = weights.stat()
    return (str(weights), st.st_mtime_ns, st.st_size)  # a file replaced in place loads again


def load_vae(choice: VaeChoice, base_vae: Any, *, device: Any, cache: dict) -> Any:
    """The chosen VAE on the model's device and in its VAE's dtype, kept in ``cache`` (the loaded
    model's, so it goes when the model does)."""
    key = _cache_key(choice.asset)
    if key in cache:
        return cache[key]
    vae = _load(choice, base_vae)
    # The base VAE's dtype: the model's, or fp32 where loader.load_model upcast it for fp16.
    vae.to(device=device)
    if vae.dtype != base_vae.dtype:
        vae.to(dtype=base_vae.dtype)
    vae.eval().requires_grad_(False)
    cache.clear()  # one override kept per model: VAEs are big, switching is rare
    cache[key] = vae
    return vae


def _load(choice: VaeChoice, base_vae: Any) -> Any:
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    asset = choice.asset
    weights, sub = _weights_of(asset)
    try:
        if asset.is_folder:
            vae = AutoencoderKL.from_pretrained(str(asset.path), subfolder=sub, use_safetensors=True,
                                                torch_dtype=torch.float32)
        else:
            state = load_file(str(weights))
            if not any(k.startswith(("decoder.", "first_stage_model.decoder.")) for k in state):
                raise UnsupportedModelError(
                    f"VAE {asset.name!r} holds no VAE weights (no decoder. keys): is it a "
                    "checkpoint, LoRA or embedding? Put VAEs alone in the VAE folder")
            with tempfile.TemporaryDirectory(prefix="bildwerk-vae-") as tmp:
                # The base model's VAE config: what the weights are built into, offline.
                base_vae.save_config(Path(tmp) / "vae")
                vae = AutoencoderKL.from_single_file(state, config=tmp, subfolder="vae", local_files_only=True,
                                                     torch_dtype=torch.float32)
    except (UnsupportedModelError, UnsafeModelError):
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors, diffusers and torch each fail their own way

        reason = str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"VAE {asset.name!r} could not be loaded ({reason}): a cut-off download, or a VAE for "
            "another kind of model; download it again or choose another") from None
    _check_fits(choice, vae, base_vae)
    return vae


def _check_fits(choice: VaeChoice, vae: Any, base: Any) -> None:
    """The VAE must make the latents the UNet reads: same channels and downsampling."""
    ours, theirs = vae.config, base.config
    for key in ("latent_channels", "in_channels", "out_channels"):
        if getattr(ours, key, None) != getattr(theirs, key, None):
            raise UnsupportedModelError(
                f"VAE {choice.name!r} does not fit this model ({key} {getattr(ours, key, None)}, the model's "
                f"VAE has {getattr(theirs, key, None)}): it is for another family of models")
    if len(ours.block_out_channels) != len(theirs.block_out_channels):
        raise UnsupportedModelError(
            f"VAE {choice.name!r} does not fit this model (another downsampling factor): it is for "
            "another family of models")
    for name, p in vae.named_parameters():
        if p.device.type == "meta":  # weights the file lacked
            raise UnsupportedModelError(f"VAE {choice.name!r} lacks weights ({name}): an incomplete file")
