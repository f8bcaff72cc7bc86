"""Training settings: every knob has a default and a validator."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Training compute precision (train/precision.py resolves "auto" on the hardware).
Precision = Literal["auto", "fp32", "bf16", "fp16"]

# A new model's size when none is given: the default model's (16x16x4 latents through a 4x VAE).
SCRATCH_RESOLUTION = 64


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Path
    out: Path
    # What to train: a new sentence-conditioned model from scratch, or an existing model.
    base_model: str | None = Field(default=None, description="Fine-tune this model; None = from scratch.")
    method: Literal["full", "lora"] = "full"
    vae: Path | None = Field(default=None, description="VAE folder for training from scratch.")
    resolution: int | None = Field(
        default=None, ge=32, le=1024,
        description="Training size in px. None: the base model's own size when fine-tuning, a prepared file's "
        "size, else 64 (the default model's).")
    steps: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=32, ge=1, le=1024)
    gradient_accumulation: int = Field(
        default=1, ge=1, le=1024, description="Micro-batches per optimizer step (effective batch = batch_size x this)."
    )
    learning_rate: float = Field(default=3e-4, gt=0)
    warmup_steps: int | None = Field(
        default=None, ge=0, description="Linear learning-rate warm-up in steps. None: a tenth of the run, at "
        "most 200 (a fixed 200 left a 30-step run at 4% of its learning rate).")
    weight_decay: float = Field(default=1e-2, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    cond_dropout: float = Field(default=0.1, ge=0, le=1, description="Classifier-free guidance dropout.")
    min_snr_gamma: float | None = Field(default=5.0, description="Min-SNR loss weighting; None = plain MSE.")
    prediction_type: Literal["epsilon", "v_prediction"] | None = Field(
        default=None, description="What the UNet learns to predict. None: epsilon from scratch, the base "
        "model's when fine-tuning. v-prediction avoids the blown-up first steps of an epsilon model on the "
        "cosine schedule; fine-tuning an epsilon model with v_prediction converts it (as Stable Diffusion 2's "
        "768-v model was).")
    ema_decay: float = Field(default=0.999, ge=0, lt=1)
    lora_rank: int = Field(default=8, ge=1, le=256)
    flip: bool = True
    languages: tuple[str, ...] | None = Field(default=None, description="Caption columns to use; None = all.")
    checkpoint_every: int = Field(default=500, ge=1)
    sample_every: int = Field(default=500, ge=0, description="Steps between sample grids; 0 = none.")
    sample_prompts: list[str] = Field(
        default_factory=lambda: ["a red apple", "ein Hund", "une voiture", "고양이", "дом"]
    )
    keep_checkpoints: int = Field(default=2, ge=1)
    seed: int = 0
    device: str | None = None
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch.")
    precision: Precision = Field(
        default="auto", description="Compute precision; auto = bf16 where the hardware has it, else fp32."
    )
    name: str = "bildwerk-model"
    guidance: float | None = Field(
        default=None, ge=0, le=30,
        description="Recommended guidance: written to the model's bildwerk.json, used for sample grids.",
    )
    unet: dict | None = Field(default=None, description="UNet config overrides (from scratch).")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.base_model is None and self.method == "lora":
            raise ValueError("LoRA needs a base model to adapt (--base)")
        return self

    @property
    def warmup(self) -> int:
        """The warm-up this run uses: the one asked for, else :func:`default_warmup`."""
        return default_warmup(self.steps, cap=200) if self.warmup_steps is None else self.warmup_steps


def default_warmup(steps: int, *, cap: int) -> int:
    """A tenth of the run, at least 1 and at most ``cap`` steps: short runs still reach their
    learning rate, long ones keep the warm-up they always had."""
    return max(1, min(cap, steps // 10))


class VaeTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Path
    out: Path
    resolution: int = Field(default=64, ge=16, le=1024)
    crop: int | None = Field(default=32, description="Train on random crops of this size (the VAE is convolutional).")
    steps: int = Field(default=2000, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    kl_weight: float = Field(default=1e-6, ge=0)
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 4
    checkpoint_every: int = Field(default=500, ge=1)
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    precision: Precision = "auto"
    init_from: Path | None = Field(
        default=None, description="Start from this VAE (its folder, or a model folder with vae/) instead of a new one.")
    decoder_only: bool = Field(
        default=False, description="Train only the decoder: the encoder, the latent space and the scaling factor "
        "stay as they are, so UNets trained on this VAE's latents stay valid.")

    @model_validator(mode="after")
    def _check(self) -> VaeTrainConfig:
        if self.decoder_only and self.init_from is None:
            raise ValueError("decoder_only fine-tunes an existing VAE: set init_from (--from)")
        return self
