"""Train a small AutoencoderKL for bildwerk's own latent diffusion models.

Clip art (flat colours, clean edges) is kind to a small VAE. It is fully
convolutional, so it trains on random crops (cheap on a CPU) and encodes whole
images afterwards. The latent scaling factor is measured on the data at the end,
as Stable Diffusion's was, so latents reach the UNet with unit variance.

``decoder_only`` fine-tunes the decoder of an existing VAE on whole images, as
Stable Diffusion's later VAE releases did: the encoder and the scaling factor stay
fixed, so the latents a UNet was trained on mean the same and the UNet keeps
working, while every picture it makes decodes more faithfully. The decoder learns
from posterior samples, not only the mean, because a UNet's latents are never
exactly an encoder's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bildwerk.core.errors import InvalidImageError, InvalidRequestError
from bildwerk.images.tensors import to_model_range
from bildwerk.train.checkpoints import checkpoint_dir, latest_checkpoint, start_run
from bildwerk.train.config import VaeTrainConfig, default_warmup
from bildwerk.train.imagefolder import load_imagefolder
from bildwerk.train.precision import MixedPrecision
from bildwerk.train.run import RunState, open_progress, run_steps, warmup_cosine


def build_vae(cfg: VaeTrainConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=32,
        sample_size=cfg.resolution,
    )


def vae_folder(path: Path) -> Path:
    """The AutoencoderKL folder at ``path``: a VAE folder itself or a model folder with vae/."""
    if (path / "vae" / "config.json").is_file():
        return path / "vae"
    if (path / "config.json").is_file():
        return path
    raise InvalidRequestError(f"{path}: no VAE there (expected config.json, or a model folder with vae/)")


def load_vae(path: Path):
    """An AutoencoderKL folder, in fp32 (training and measuring both want full precision)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(path, torch_dtype=torch.float32)


def _trainable(vae, decoder_only: bool) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates; with ``decoder_only`` the encoder side is frozen."""
    if decoder_only:
        vae.encoder.requires_grad_(False)
        if vae.quant_conv is not None:
            vae.quant_conv.requires_grad_(False)
    return [p for p in vae.parameters() if p.requires_grad]


def _batch(images: torch.Tensor, idx: torch.Tensor, crop: int | None, gen: torch.Generator) -> torch.Tensor:
    x = to_model_range(images[idx])
    if crop and crop < x.shape[-1]:
        size = x.shape[-1]
        ox = torch.randint(0, size - crop + 1, (1,), generator=gen).item()
        oy = torch.randint(0, size - crop + 1, (1,), generator=gen).item()
        x = x[..., oy : oy + crop, ox : ox + crop]
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x[flip] = x[flip].flip(-1)
    return x


@torch.no_grad()
def reconstruct(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``x`` (N x 3 x H x W in [-1, 1]) to the posterior mean and decode it: the
    reconstruction, clamped to [-1, 1], and each picture's PSNR in dB."""
    rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((rec - x) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return rec, 10 * torch.log10(4.0 / mse)  # range [-1, 1] has peak-to-peak 2


def psnr(vae, images: torch.Tensor, device: torch.device) -> float:
    """Reconstruction PSNR (dB) of whole images through the VAE's mean latent."""
    vals = [reconstruct(vae, to_model_range(chunk).to(device))[1] for chunk in images.split(64)]
    return float(torch.cat(vals).mean())


@torch.no_grad()
def measure_scaling_factor(vae, images: torch.Tensor, device: torch.device) -> float:
    lat = torch.cat([vae.encode(to_model_range(c).to(device)).latent_dist.mode() for c in images[:1024].split(64)])
    return float(1.0 / lat.std())


def train_vae(
    cfg: VaeTrainConfig,
    *,
    show_progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train (or resume) a VAE; returns the folder of the finished ``AutoencoderKL``."""
    base = vae_folder(cfg.init_from) if cfg.init_from is not None else None  # a wrong path fails first
    device, out = start_run(cfg)
    amp = MixedPrecision.choose(cfg.precision, device, auto_fp16=False)  # fp16 VAEs overflow
    data = load_imagefolder(cfg.data, resolution=cfg.resolution, split="train")
    try:
        held = load_imagefolder(cfg.data, resolution=cfg.resolution, split="test", limit=256)
    except InvalidImageError:  # a broken held-out picture is an error, not "no held-out rows"
        raise
    except InvalidRequestError:  # no held-out rows: PSNR is then reported on training images
        held = None

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    start = 0
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        vae = load_vae(ckpt / "vae")
    elif base is not None:
        vae = load_vae(base)
    else:
        vae = build_vae(cfg)
    params = _trainable(vae, cfg.decoder_only)
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    run = RunState(out, opt, gen, amp)
    if ckpt is not None:
        _, start = run.restore(ckpt)
    vae.to(device).train()

    def lr_at(step: int) -> float:
        # The same warm-up as before for the recipe's 1000+ steps; short trial runs get a shorter one.
        return warmup_cosine(step, base=cfg.learning_rate, total=cfg.steps,
                             warmup=default_warmup(cfg.steps, cap=100), floor=0.1)

    def train_step(step: int) -> tuple[float, dict[str, Any]]:
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        x = _batch(data.images, idx, cfg.crop, gen).to(device)
        with amp.autocast():
            with torch.set_grad_enabled(not cfg.decoder_only):
                post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample(generator=gen)).sample
        rec = rec.float()
        rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        kl = post.kl().float().mean()
        # A frozen encoder's KL carries no gradient; it is still logged.
        loss = rec_loss + (0.0 if cfg.decoder_only else cfg.kl_weight) * kl
        amp.backward(loss)
        amp.step(opt, params, 1.0)
        return loss.item(), {"rec": rec_loss.item(), "kl": kl.item()}

    def checkpoint(done: int, loss: float, last: bool) -> None:
        vae.save_pretrained(checkpoint_dir(out, done) / "vae", safe_serialization=True)
        run.save(done, loss, {}, keep=2)

    progress = open_progress(out, cfg.steps, start, description="VAE", show=show_progress, callback=callback)
    progress.note(f"compute precision {amp.name} on {device}"
                  + (f"; decoder only, encoder of {base} frozen" if cfg.decoder_only else ""))
    run_steps(start=start, total=cfg.steps, optimizer=opt, lr_at=lr_at, train_step=train_step,
              progress=progress, checkpoint_every=cfg.checkpoint_every, checkpoint=checkpoint)

    vae.eval()
    if cfg.decoder_only:
        scale = float(vae.config.scaling_factor)  # the latent space is unchanged
    else:
        scale = measure_scaling_factor(vae, data.images, device)
        vae.register_to_config(scaling_factor=scale)
    final = out / "vae"
    vae.save_pretrained(final, safe_serialization=True)
    eval_images = held.images if held is not None else data.images[:256]
    quality = {"psnr_db": psnr(vae, eval_images, device), "on": "test" if held is not None else "train",
               "scaling_factor": scale, "steps": cfg.steps,
               "init_from": str(base) if base is not None else None, "decoder_only": cfg.decoder_only}
    (final / "quality.json").write_text(json.dumps(quality, indent=2), "utf-8")
    progress.note(f"VAE saved to {final}: PSNR {quality['psnr_db']:.1f} dB on {quality['on']}, "
                  f"scaling factor {scale:.3f}")
    return final
