"""Full-size Stable Diffusion architectures with random weights, built from their configs.

SD 1.5 (512 px), SD 2.x 768-v (v-prediction, OpenCLIP-H text side) and SDXL base (1024 px,
two text encoders, text_time added conditioning): the layer shapes of the published models,
so FLOPs and memory are theirs, but no downloaded weight. What they draw means nothing, and
fp16 random weights may overflow: time them, do not judge their pictures.

The configs are written out here (the published model folders are not on this machine).
``build`` makes the networks directly on the target device (``with torch.device(dev)``: a CPU
init of SDXL's 2.6 B parameters takes minutes), then casts them; the meta device gives the
parameter counts without memory (tests/bench/test_architectures.py checks them).
``--tiny`` runs of bench/gpu_speed.py use bildwerk.models.tiny's pipelines instead.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ARCHITECTURES = ("sd15", "sd2", "sdxl")

# Scheduler config of the published models' DDIM setup (their betas, "leading" spacing).
_DDIM = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
         "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
         "steps_offset": 1, "timestep_spacing": "leading", "prediction_type": "epsilon"}

_UNET_COMMON = {"in_channels": 4, "out_channels": 4, "layers_per_block": 2, "act_fn": "silu",
                "norm_num_groups": 32, "norm_eps": 1e-5, "flip_sin_to_cos": True, "freq_shift": 0,
                "downsample_padding": 1, "mid_block_scale_factor": 1, "center_input_sample": False}

_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
        "block_out_channels": [128, 256, 512, 512], "act_fn": "silu", "norm_num_groups": 32,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "force_upcast": True}

# CLIP ViT-L/14's text tower (SD 1.x, SDXL's first encoder), OpenCLIP ViT-H/14's without its
# last layer (SD 2.x), OpenCLIP ViT-bigG/14's with its projection (SDXL's second encoder).
_CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
           "num_attention_heads": 12, "hidden_act": "quick_gelu", "projection_dim": 768}
_OPENCLIP_H = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
               "num_attention_heads": 16, "hidden_act": "gelu", "projection_dim": 512}
_OPENCLIP_BIGG = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                  "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280}


@dataclass(frozen=True)
class Architecture:
    """One published model's shapes: what ``build`` makes."""

    name: str
    label: str
    size: int  # native pixels per side
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: list[tuple[dict[str, Any], bool]]  # (CLIP text config, with projection) per encoder
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(_DDIM))
    # Published parameter counts (millions) per network, which the configs must reproduce.
    expected_m: dict[str, float] = field(default_factory=dict)

    @property
    def pipeline_class(self) -> str:
        return "StableDiffusionXLPipeline" if len(self.text) == 2 else "StableDiffusionPipeline"


SD15 = Architecture(
    name="sd15", label="SD 1.5", size=512,
    unet={**_UNET_COMMON, "sample_size": 64, "block_out_channels": [320, 640, 1280, 1280],
          "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
          "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
          "cross_attention_dim": 768, "attention_head_dim": 8},
    vae={**_VAE, "sample_size": 512, "scaling_factor": 0.18215},
    text=[(_CLIP_L, False)],
    expected_m={"unet": 859.5, "vae": 83.7, "text_encoder": 123.1},
)

SD2 = Architecture(
    name="sd2", label="SD 2.x 768-v", size=768,
    unet={**_UNET_COMMON, "sample_size": 96, "block_out_channels": [320, 640, 1280, 1280],
          "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
          "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
          "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
          "use_linear_projection": True, "upcast_attention": True},
    vae={**_VAE, "sample_size": 768, "scaling_factor": 0.18215},
    text=[(_OPENCLIP_H, False)],
    scheduler={**_DDIM, "prediction_type": "v_prediction"},
    expected_m={"unet": 865.9, "vae": 83.7, "text_encoder": 340.4},
)

SDXL = Architecture(
    name="sdxl", label="SDXL base", size=1024,
    unet={**_UNET_COMMON, "sample_size": 128, "block_out_channels": [320, 640, 1280],
          "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
          "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
          "cross_attention_dim": 2048, "attention_head_dim": [5, 10, 20],
          "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True,
          "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
          "projection_class_embeddings_input_dim": 2816},  # 6 time ids x 256 + 1280 pooled text
    vae={**_VAE, "sample_size": 1024, "scaling_factor": 0.13025},
    text=[(_CLIP_L, False), (_OPENCLIP_BIGG, True)],
    expected_m={"unet": 2567.5, "vae": 83.7, "text_encoder": 123.1, "text_encoder_2": 694.7},
)

BY_NAME = {a.name: a for a in (SD15, SD2, SDXL)}


def _text_encoder(config: dict[str, Any], projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from bildwerk.models.tiny import VOCAB_SIZE

    # CLIP's own vocabulary size (the embedding's FLOPs are nil, its memory is real); the
    # offline tokenizer's special tokens are the last two of its 514 ids.
    cfg = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5,
                         bos_token_id=VOCAB_SIZE - 2, eos_token_id=VOCAB_SIZE - 1,
                         pad_token_id=VOCAB_SIZE - 1, **config)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def networks(arch: Architecture) -> dict[str, torch.nn.Module]:
    """The UNet, VAE and text encoders of ``arch``, on the current default device (the caller's
    ``with torch.device(...)``), in float32, with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    nets: dict[str, torch.nn.Module] = {"unet": UNet2DConditionModel(**arch.unet), "vae": AutoencoderKL(**arch.vae)}
    for i, (config, projection) in enumerate(arch.text):
        nets["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = _text_encoder(config, projection)
    return nets


def parameter_counts(nets: dict[str, torch.nn.Module]) -> dict[str, int]:
    return {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}


def meta_parameter_counts(arch: Architecture) -> dict[str, int]:
    """Parameter counts of ``arch`` without memory or time: the networks on the meta device."""
    with torch.device("meta"):
        return parameter_counts(networks(arch))


def build(arch: Architecture, *, device: str | torch.device, dtype: torch.dtype, seed: int = 0,
          tokenizer_dir: Path | None = None):
    """The diffusers pipeline of ``arch`` (DDIM scheduler), built on ``device`` and cast to ``dtype``."""
    import diffusers
    from diffusers import DDIMScheduler

    from bildwerk.models.tiny import offline_tokenizer

    torch.manual_seed(seed)
    with torch.device(device), torch.no_grad():
        nets = networks(arch)
    for net in nets.values():
        net.to(dtype=dtype).eval().requires_grad_(False)
    tokenizer = offline_tokenizer(tokenizer_dir or Path(tempfile.mkdtemp(prefix="bildwerk-tok-")))
    parts: dict[str, Any] = {**nets, "tokenizer": tokenizer, "scheduler": DDIMScheduler(**arch.scheduler)}
    if len(arch.text) == 2:
        parts["tokenizer_2"] = tokenizer
    else:
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return getattr(diffusers, arch.pipeline_class)(**parts)


def build_tiny(name: str, *, seed: int = 0, tokenizer_dir: Path | None = None):
    """bildwerk.models.tiny's pipeline standing in for ``name`` (SD 2.x: the tiny SD with a
    v-prediction DDIM scheduler), for CPU runs of the harness."""
    from diffusers import DDIMScheduler

    from bildwerk.models.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("sdxl" if name == "sdxl" else "sd", seed=seed, tokenizer_dir=tokenizer_dir)
    if name == "sd2":
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    return pipe


def main() -> None:
    for arch in BY_NAME.values():
        counts = meta_parameter_counts(arch)
        print(f"{arch.label}: " + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in counts.items()))


if __name__ == "__main__":
    main()
