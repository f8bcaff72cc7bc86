"""Train a UNet: from scratch on the multilingual sentence encoder, or fine-tune a model.

From scratch (no ``base_model``): a new ``UNet2DConditionModel`` learns on the
latents of a VAE trained by ``bildwerk.train.vae``, conditioned on the frozen
multilingual sentence encoder. Each sample takes its caption in a random one of
the languages the row has, so German, Korean... prompts are learnt alike.

Fine-tuning (``base_model``): the model's own text side conditions it (CLIP for
Stable Diffusion, the sentence encoder for bildwerk's models); ``method`` "full"
trains every UNet weight, "lora" trains a PEFT LoRA adapter on the attention
projections and also exports a merged model ready to use.

Both ways use classifier-free-guidance dropout, min-SNR loss weighting, EMA
weights for sampling (not for LoRA), resumable checkpoints and sample grids.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from bildwerk.core.errors import InvalidRequestError
from bildwerk.models.loader import BILDWERK_CONFIG
from bildwerk.models.sentence_encoder import SentenceEncoder, SentenceEncoderConfig
from bildwerk.train.checkpoints import checkpoint_dir, latest_checkpoint, start_run
from bildwerk.train.config import SCRATCH_RESOLUTION, TrainConfig
from bildwerk.train.imagefolder import caption_language_counts, main_languages
from bildwerk.train.precision import MixedPrecision
from bildwerk.train.prepared import prepare, training_data
from bildwerk.train.prepared import save as save_prepared
from bildwerk.train.run import RunState, open_progress, run_steps, warmup_cosine

DEFAULT_UNET: dict[str, Any] = {
    "block_out_channels": (64, 128, 192),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}


def build_unet(sample_size: int, cross_attention_dim: int, overrides: dict | None = None):
    from diffusers import UNet2DConditionModel

    cfg = {**DEFAULT_UNET, **(overrides or {})}
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, cross_attention_dim=cross_attention_dim, **cfg
    )


def training_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDPMScheduler

    # A cosine schedule suits small latents (16x16) better than SD's scaled-linear.
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type=prediction_type, clip_sample=False)


@dataclass
class _Parts:
    unet: Any
    vae: Any
    scheduler: Any  # training (noise) scheduler
    family: str  # "sentence" | "sd" | "sdxl"
    pipe: Any = None  # the base pipeline when fine-tuning
    encoder: SentenceEncoder | None = None
    base_config: dict | None = None
    languages: list[str] | None = None  # recorded in the model's bildwerk.json (model_languages reads it)


def _load_parts(cfg: TrainConfig, device: torch.device) -> _Parts:
    if cfg.base_model is None:
        if cfg.vae is None:
            raise InvalidRequestError("training from scratch needs a VAE: pass --vae FOLDER (see `bildwerk train-vae`)")
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(str(cfg.vae), use_safetensors=True)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if cfg.resolution % factor:
            raise InvalidRequestError(f"resolution {cfg.resolution} is not a multiple of the VAE's factor {factor}")
        enc = SentenceEncoder(SentenceEncoderConfig(scale=SentenceEncoderConfig().dim ** 0.5))
        torch.manual_seed(cfg.seed)
        unet = build_unet(cfg.resolution // factor, enc.config.dim, cfg.unet)
        return _Parts(unet, vae, training_scheduler(cfg.prediction_type or "epsilon"), "sentence", encoder=enc,
                      base_config={"conditioning": enc.config.__dict__})
    from bildwerk.models.loader import load_model

    model = load_model(cfg.base_model, device="cpu", dtype="float32")
    if model.family == "sdxl":
        raise InvalidRequestError("fine-tuning SDXL is not supported yet; use an SD 1.x/2.x or bildwerk model")
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(model.pipe.scheduler.config)
    if cfg.prediction_type is not None and cfg.prediction_type != sched.config.prediction_type:
        # Converting the parametrisation: train on the new target and sample with it.
        sched = DDPMScheduler.from_config(sched.config, prediction_type=cfg.prediction_type)
        model.pipe.scheduler = type(model.pipe.scheduler).from_config(
            model.pipe.scheduler.config, prediction_type=cfg.prediction_type)
    return _Parts(model.unet, model.vae, sched, model.family, pipe=model.pipe,
                  encoder=model.extras.get("encoder"), base_config=model.extras.get("config") or None)


def resolve_resolution(cfg: TrainConfig) -> tuple[TrainConfig, str]:
    """``cfg`` with its training size filled in, and where that size came from (for the log).

    Unset, the size is a prepared file's own, else the base model's own (UNet sample size x
    VAE factor: 64 px for bildwerk's default model, where 512 px would cost ~25x as much), else
    Stable Diffusion's 512 for a hub model not on this machine, else 64 from scratch."""
    if cfg.resolution is not None:
        return cfg, "--resolution"
    from bildwerk.train.prepared import is_prepared_file, read_meta

    if is_prepared_file(cfg.data):
        size, why = int(read_meta(cfg.data)["resolution"]), "the prepared file's"
    elif cfg.base_model is not None:
        from bildwerk.models.loader import native_size_of

        native = native_size_of(cfg.base_model)
        size, why = (native, "the base model's own") if native else (512, "Stable Diffusion's; the base model's is unknown")
    else:
        size, why = SCRATCH_RESOLUTION, "the default for a new model"
    return cfg.model_copy(update={"resolution": size}), why


def _save_pipeline(pipe, folder: Path) -> None:
    """``save_pretrained``, told that absent components (no text encoder: bildwerk's models are
    conditioned by the sentence encoder) are meant to be absent, so diffusers does not warn that
    it "cannot save" them; model_index.json still lists them as null."""
    optional = type(pipe)._optional_components
    absent = [name for name, part in pipe.components.items() if part is None and name not in optional]
    pipe._optional_components = [*optional, *absent]  # this instance only
    try:
        pipe.save_pretrained(folder, safe_serialization=True)
    finally:
        del pipe._optional_components


def _min_snr_weights(scheduler, t: torch.Tensor, gamma: float | None) -> torch.Tensor:
    if gamma is None:
        return torch.ones_like(t, dtype=torch.float32)
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, t)
    w = torch.clamp(snr, max=gamma) / snr
    if scheduler.config.prediction_type == "v_prediction":
        w = torch.clamp(snr, max=gamma) / (snr + 1)
    return w


def _clip_conditioning(pipe, captions: list[str], device: torch.device) -> torch.Tensor:
    tok = pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    with torch.no_grad():
        return pipe.text_encoder(tok.input_ids.to(device))[0]


def _export(parts: _Parts, cfg: TrainConfig, folder: Path, unet, *, half: bool = False) -> Path:
    """Write a complete diffusers model folder that bildwerk (and diffusers) can load."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    folder.mkdir(parents=True, exist_ok=True)
    if parts.family == "sentence":
        # The cosine schedule has alpha_bar ~ 1e-7 at t=999: an epsilon model's x0 estimate
        # there is its error times ~3000, and samples come out saturated. "leading" spacing
        # starts at t=951 (alpha_bar ~ 0.006, like SD's scaled-linear end) instead.
        sched = (DPMSolverMultistepScheduler.from_config(parts.scheduler.config, timestep_spacing="leading",
                                                         steps_offset=1)
                 if parts.pipe is None else parts.pipe.scheduler)
        pipe = StableDiffusionPipeline(vae=parts.vae, unet=unet, text_encoder=None, tokenizer=None, scheduler=sched,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        pipe = parts.pipe
        pipe.unet = unet
    if half:
        pipe.unet.to(torch.float16)
    _save_pipeline(pipe, folder)
    if half:
        pipe.unet.to(torch.float32)
    # Every trained model gets a card: its name and the languages of its captions (a CLIP
    # model fine-tuned on German then takes German prompts without translation).
    conf = dict(parts.base_config or {})
    conf["name"] = cfg.name
    if parts.languages:
        conf["languages"] = parts.languages
    if cfg.guidance is not None:
        conf.setdefault("defaults", {})["guidance"] = cfg.guidance
    (folder / BILDWERK_CONFIG).write_text(json.dumps(conf, indent=2, ensure_ascii=False), "utf-8")
    return folder


def sample_grid(model_dir: Path, prompts: list[str], out_png: Path, *, seed: int = 0, steps: int = 20,
                device: str | None = None) -> Path:
    """Render the fixed sample prompts with the real engine, side by side."""
    from bildwerk.app.generate import Generator
    from bildwerk.core.prompt import PromptOptions
    from bildwerk.core.spec import JobSpec
    from bildwerk.models.loader import ModelManager

    generator = Generator(models=ModelManager(device=device))
    images = [generator.run(JobSpec.build(origin="train", options=PromptOptions.verbatim(), prompt=p,
                                          model=str(model_dir), seed=seed, steps=steps)).images[0]
              for p in prompts]
    w, h = images[0].size
    grid = Image.new("RGB", (w * len(images), h), "white")
    for i, im in enumerate(images):
        grid.paste(im, (i * w, 0))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out_png)
    out_png.with_suffix(".txt").write_text("\n".join(prompts) + "\n", "utf-8")
    generator.models.unload()
    return out_png


def train_unet(
    cfg: TrainConfig,
    *,
    show_progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train (or resume); returns the folder of the final exported model."""
    cfg, size_from = resolve_resolution(cfg)
    device, out = start_run(cfg)
    amp = MixedPrecision.choose(cfg.precision, device)  # refuses an impossible choice before any work
    parts = _load_parts(cfg, device)
    vae, unet, sched = parts.vae, parts.unet, parts.scheduler
    vae.to(device).eval().requires_grad_(False)
    if parts.pipe is not None and getattr(parts.pipe, "text_encoder", None) is not None:
        parts.pipe.text_encoder.to(device).eval().requires_grad_(False)

    t_enc = time.perf_counter()
    data, data_from = training_data(cfg, vae, parts.encoder, device, out)
    latents = data.latents
    setup_s = time.perf_counter() - t_enc
    counts, estimated = caption_language_counts(data.captions)
    parts.languages = _model_languages(cfg, parts, main_languages(counts))

    if cfg.method == "lora":
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, init_lora_weights="gaussian",
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    else:
        unet.requires_grad_(True)  # a loaded model comes frozen for inference
    unet.to(device).train()
    if device.type == "cuda":
        # Fixed shapes every step: let cuDNN pick its fastest convolutions once. On an H100 the
        # default model's forward+backward at batch 256 went from 86 to 49 ms (docs/benchmarks.md).
        torch.backends.cudnn.benchmark = True
    params = [p for p in unet.parameters() if p.requires_grad]
    # The fused kernel: 11 instead of 34 ms per step for the default model's UNet on 2 CPU cores.
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                            fused=device.type in ("cpu", "cuda"))
    ema = None
    if cfg.method == "full":
        from diffusers.training_utils import EMAModel

        # foreach: one fused update for all tensors, not a Python loop over them
        # (H100: 1.4 instead of 7.7 ms a step; on 2 CPU cores about the same, docs/benchmarks.md).
        ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, model_cls=type(unet), model_config=unet.config,
                       foreach=True)

    gen = torch.Generator().manual_seed(cfg.seed)
    pyrand = random.Random(cfg.seed)
    run = RunState(out, opt, gen, amp)
    start = 0
    ckpt = latest_checkpoint(out)
    if ckpt is not None:
        state, start = run.restore(ckpt)
        if cfg.method == "lora":
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(unet, state["lora"])
        else:
            unet.load_state_dict(state["unet"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
            ema.to(device)
        pyrand.setstate(state["py_rng"])

    def lr_at(step: int) -> float:
        return warmup_cosine(step, base=cfg.learning_rate, total=cfg.steps, warmup=cfg.warmup, floor=0.05)

    n = len(data)
    progress = open_progress(out, cfg.steps, start, description="UNet", show=show_progress, callback=callback)
    if start == 0:
        shown = ", ".join(f"{lang} {'~' if estimated else ''}{k}" for lang, k in counts.items())
        reads = ("any language (sentence encoder)" if parts.family == "sentence"
                 else f"{', '.join(parts.languages or ['en'])} without translation")
        progress.note(f"{n} images ({data_from}), captions: {shown}; the model will read {reads}")
        progress.note(f"setup {setup_s:.1f}s, {sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters")
        progress.note(f"resolution {cfg.resolution} px ({size_from}), warm-up {cfg.warmup} of {cfg.steps} steps")
        peak = max(lr_at(s) for s in range(cfg.steps)) / cfg.learning_rate
        if peak < 0.9:
            progress.note(f"[yellow]warning[/]: the learning rate peaks at {peak:.0%} of --lr: the warm-up "
                          f"({cfg.warmup} steps) is too long for {cfg.steps} steps; lower --warmup")
    progress.note(f"compute precision {amp.name} on {device}")

    def micro_batch_loss() -> torch.Tensor:
        """One batch drawn from the pre-encoded latents: noise, condition (with CFG dropout), loss."""
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        flip = (torch.rand(cfg.batch_size, generator=gen) < 0.5) & data.flippable[idx] if cfg.flip else None
        mean, std = latents["mean"][idx], latents["std"][idx]
        if flip is not None and flip.any():
            mean[flip], std[flip] = latents["fmean"][idx][flip], latents["fstd"][idx][flip]
        x0 = mean + std * torch.randn(mean.shape, generator=gen)
        caps = [pyrand.choice(list(data.captions[i].values())) for i in idx.tolist()]
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cond_dropout
        if data.vectors is not None:
            cond = data.tokens(parts.encoder, caps)
            cond[drop] = 0.0  # the empty prompt: CFG's unconditional input
        else:
            caps = ["" if d else c for c, d in zip(caps, drop.tolist(), strict=True)]
            cond = _clip_conditioning(parts.pipe, caps, device)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        noisy = sched.add_noise(x0, noise, t)
        target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(x0, noise, t)
        with amp.autocast():
            pred = unet(noisy.to(device), t.to(device), cond.to(device)).sample
        per = F.mse_loss(pred.float(), target.to(device), reduction="none").mean(dim=(1, 2, 3))
        loss = (per * _min_snr_weights(sched, t, cfg.min_snr_gamma).to(device)).mean()
        return loss

    final = out / "model"

    def train_step(step: int) -> tuple[float, dict[str, Any]]:
        # Gradient accumulation: several micro-batches per optimizer step, for a large
        # effective batch in little memory.
        step_loss = 0.0
        for _ in range(cfg.gradient_accumulation):
            loss = micro_batch_loss()
            amp.backward(loss / cfg.gradient_accumulation)
            step_loss += loss.item() / cfg.gradient_accumulation
        amp.step(opt, params, cfg.grad_clip)
        if ema is not None:
            ema.step(unet.parameters())
        return step_loss, {}

    def checkpoint(done: int, loss: float, last: bool) -> None:
        model_dir = _export_current(parts, cfg, unet, ema, checkpoint_dir(out, done) / "model")
        extra: dict[str, Any] = {"py_rng": pyrand.getstate()}
        if cfg.method == "lora":
            from peft import get_peft_model_state_dict

            extra["lora"] = get_peft_model_state_dict(unet)
        else:
            extra["unet"] = unet.state_dict()
            extra["ema"] = ema.state_dict() if ema is not None else None
        run.save(done, loss, extra, keep=cfg.keep_checkpoints)
        if last:
            import shutil

            shutil.rmtree(final, ignore_errors=True)
            shutil.copytree(model_dir, final)
            if cfg.method == "lora":  # the adapter beside the merged model: RUN/lora/ installs as a LoRA
                shutil.rmtree(out / "lora", ignore_errors=True)
                shutil.copytree(model_dir.parent / "lora", out / "lora")

    def samples(done: int, last: bool) -> None:
        if cfg.sample_every and (done % cfg.sample_every == 0 or last):
            src = checkpoint_dir(out, done) / "model"
            if not src.is_dir():
                src = _export_current(parts, cfg, unet, ema, out / "_sample_model")
            grid = sample_grid(src, cfg.sample_prompts, out / "samples" / f"step-{done:06d}.png",
                               seed=cfg.seed, device=str(device))
            progress.note(f"step {done}: samples in {grid}")
            unet.train()

    run_steps(start=start, total=cfg.steps, optimizer=opt, lr_at=lr_at, train_step=train_step,
              progress=progress, checkpoint_every=cfg.checkpoint_every, checkpoint=checkpoint,
              after_step=samples)
    return final


def _model_languages(cfg: TrainConfig, parts: _Parts, trained: list[str]) -> list[str] | None:
    """What the model's card records: the captions' main languages and, when fine-tuning, its
    base's (a CLIP base reads English; a base's own record carries over); None when none."""
    base: set[str] = set((parts.base_config or {}).get("languages") or ())
    if cfg.base_model is not None:
        from bildwerk.models.loader import model_languages

        base |= set(model_languages(cfg.base_model) or ())
    return sorted(base | set(trained)) or None


def prepare_file(cfg: TrainConfig, path: Path, *, compact: bool = False) -> Path:
    """Encode ``cfg``'s image folder for ``cfg``'s model into one file ``train_unet`` can start from."""
    from bildwerk.models.devices import choose_device

    cfg, _ = resolve_resolution(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = choose_device(cfg.device)
    parts = _load_parts(cfg, device)
    parts.vae.to(device).eval().requires_grad_(False)
    return save_prepared(prepare(cfg, parts.vae, parts.encoder, device), path, compact=compact)


def _export_current(parts: _Parts, cfg: TrainConfig, unet, ema, folder: Path) -> Path:
    """Export the weights used for sampling: EMA for full training, merged adapter for LoRA."""
    if cfg.method == "lora":
        return _export_lora(parts, cfg, unet, folder)
    if ema is not None:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
    try:
        return _export(parts, cfg, folder, unet)
    finally:
        if ema is not None:
            ema.restore(unet.parameters())


def _export_lora(parts: _Parts, cfg: TrainConfig, unet, folder: Path) -> Path:
    """Save the adapter (``lora/``) and a merged, ready-to-use copy of the model."""
    import copy

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict
    from peft.tuners.tuners_utils import BaseTunerLayer

    lora_dir = folder.parent / "lora"
    lora_state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(lora_dir, unet_lora_layers=lora_state, safe_serialization=True)
    merged = copy.deepcopy(unet)
    for module in merged.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    # Strip the adapter wrappers so the folder is a plain UNet checkpoint.
    base_state = {}
    for key, value in merged.state_dict().items():
        if "lora_" in key:
            continue
        base_state[key.replace(".base_layer", "")] = value
    plain = type(unet).from_config(unet.config)
    plain.load_state_dict(base_state)
    return _export(parts, cfg, folder, plain.eval())
