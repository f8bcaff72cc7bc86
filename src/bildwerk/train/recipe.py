"""The default model's recipe: dataset -> VAE -> UNet -> installed default model.

``bildwerk default-model`` runs it end to end (``make default-model``). Every
stage resumes from its last checkpoint, so a long CPU run can be stopped and
started again; on a GPU the same recipe takes minutes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bildwerk.models.install import swap_in
from bildwerk.models.loader import EMBEDDED_DEFAULT
from bildwerk.train.config import SCRATCH_RESOLUTION, TrainConfig, VaeTrainConfig

DATA_SIZE = 128  # the dataset keeps 128 px so a larger model can be trained from it later
RESOLUTION = SCRATCH_RESOLUTION  # the default model's output size (16x16x4 latents through a 4x VAE)

VAE_RECIPE: dict[str, Any] = {
    "resolution": RESOLUTION,
    "crop": 32,
    "steps": 1000,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "kl_weight": 1e-6,
    "block_out_channels": (32, 64, 128),
    "checkpoint_every": 250,
}

# Optional second VAE stage (`--decoder-steps`): the decoder alone, on whole images, from
# posterior samples. The encoder (and so every latent the UNet learns from) stays the first
# stage's. Held-out reconstructions: PSNR 20.0 -> 27.2 dB, judge top-5 35.7% -> 45.2% (real
# 50%). Not part of the shipped model: its text-to-image pictures scored no better with it
# (English 19.0% both; German/Korean 2-3 of 84 pictures fewer), see docs/default-model.md.
DECODER_RECIPE: dict[str, Any] = {
    "resolution": RESOLUTION,
    "crop": None,
    "steps": 2000,
    "batch_size": 32,
    "learning_rate": 2e-4,
    "decoder_only": True,
    "checkpoint_every": 250,
}

UNET_RECIPE: dict[str, Any] = {
    "resolution": RESOLUTION,
    "steps": 13000,
    "batch_size": 32,
    "learning_rate": 4e-4,
    "warmup_steps": 200,
    "cond_dropout": 0.1,
    "min_snr_gamma": 5.0,
    "ema_decay": 0.999,
    "checkpoint_every": 250,
    "sample_every": 500,
    "name": "bildwerk-default",
}


# The shipped UNet: the same stage with a wider 4x4 block, a batch of 256 and 3,670 steps, as
# run on an H100 in 7 minutes (tools/gpu, 2026-11-26). 0.94 M samples against the CPU recipe's
# 0.42 M; held-out English top-5 24.4% against 18.5% (4 seeds; docs/default-model.md). On 2
# CPU cores the same stage would take an estimated 4 hours (from 1.9 steps of 32 a second).
UNET_RECIPE_GPU: dict[str, Any] = {
    **UNET_RECIPE,
    "steps": 3670,
    "batch_size": 256,
    "learning_rate": 8e-4,
    "warmup_steps": 500,
    "ema_decay": 0.9995,
    "checkpoint_every": 500,
    "sample_every": 500,  # tools/gpu turns grids off: its machine has no sentence encoder
    "unet": {"block_out_channels": (64, 128, 256)},
}

RECIPES: dict[str, dict[str, Any]] = {"gpu": UNET_RECIPE_GPU, "cpu": UNET_RECIPE}


def vae_config(data: Path, work: Path, **overrides: Any) -> VaeTrainConfig:
    return VaeTrainConfig(data=data, out=work / "vae-run", **{**VAE_RECIPE, **overrides})


def decoder_config(data: Path, work: Path, vae: Path, **overrides: Any) -> VaeTrainConfig:
    return VaeTrainConfig(data=data, out=work / "decoder-run", init_from=vae,
                          **{**DECODER_RECIPE, **overrides})


def unet_config(data: Path, work: Path, vae: Path, *, recipe: str = "gpu", **overrides: Any) -> TrainConfig:
    """The UNet stage of ``recipe``: "gpu" (the shipped model's) or "cpu" (the first release's)."""
    return TrainConfig(data=data, out=work / "unet-run", vae=vae, **{**RECIPES[recipe], **overrides})


def train_default_model(
    data: Path,
    work: Path,
    *,
    vae_overrides: dict[str, Any] | None = None,
    decoder: bool = False,
    decoder_overrides: dict[str, Any] | None = None,
    unet_overrides: dict[str, Any] | None = None,
    recipe: str = "gpu",
    show_progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train the VAE, optionally fine-tune its decoder (``decoder``), then the UNet with the
    stage of ``recipe`` ("gpu" or "cpu"), into ``work``; returns the trained model folder."""
    from bildwerk.train.data import validate_image_folder
    from bildwerk.train.unet import train_unet
    from bildwerk.train.vae import train_vae

    validate_image_folder(data).raise_if_failed()
    vae_dir = work / "vae-run" / "vae"
    decoder_dir = work / "decoder-run" / "vae"
    # All configurations first: a bad override fails now, not after the VAE's half hour.
    vae_cfg = vae_config(data, work, **(vae_overrides or {}))
    decoder_cfg = decoder_config(data, work, vae_dir, **(decoder_overrides or {}))
    # The UNet only ever uses the encoder, which the decoder stage leaves as it is; the
    # finished model carries the fine-tuned decoder when there is one.
    unet_cfg = unet_config(data, work, decoder_dir if decoder else vae_dir, recipe=recipe, **(unet_overrides or {}))
    if not (vae_dir / "config.json").is_file():
        train_vae(vae_cfg, show_progress=show_progress, callback=callback)
    if decoder and not (decoder_dir / "config.json").is_file():
        train_vae(decoder_cfg, show_progress=show_progress, callback=callback)
    return train_unet(unet_cfg, show_progress=show_progress, callback=callback)


def unet_to_half(model_dir: Path) -> None:
    """Rewrite a model folder's UNet in fp16, in place: half the bytes, for shipping or the trip back."""
    import torch
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    shutil.rmtree(model_dir / "unet")
    unet.to(torch.float16).save_pretrained(model_dir / "unet", safe_serialization=True)


def install_default_model(
    model_dir: Path, target: Path = EMBEDDED_DEFAULT, *, half: bool = True, guidance: float | None = None
) -> Path:
    """Copy a trained model into the package as the embedded default (UNet in fp16 to stay small)."""
    tmp = target.with_name(target.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    if half:
        unet_to_half(tmp)
    conf_path = tmp / "bildwerk.json"
    conf = json.loads(conf_path.read_text("utf-8")) if conf_path.is_file() else {}
    conf["name"] = "bildwerk-default"
    if guidance is not None:
        conf.setdefault("defaults", {})["guidance"] = guidance
    conf_path.write_text(json.dumps(conf, indent=2, ensure_ascii=False), "utf-8")
    swap_in(tmp, target, target.with_name(target.name + ".old"))
    return target
