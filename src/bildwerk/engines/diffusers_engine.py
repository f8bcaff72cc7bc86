"""The local engine: diffusers components driven by bildwerk's own denoising loop.

One set of components (UNet, VAE, text encoders) serves text-to-image,
image-to-image and inpainting. The loop lives in ``denoise.py``; this module
prepares its inputs (sizes, noise, image latents, masks), runs it with
progress and cancellation, and turns latents back into images that are pasted
into the original where only a region was repainted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.hires import hires_sizes, second_pass_steps
from bildwerk.core.loras import extract_lora_tags, merge_loras
from bildwerk.core.request import GenerationRequest, Mode
from bildwerk.engines.adapters import ActiveSet, activate, prepare_loras
from bildwerk.engines.base import (
    CancelToken,
    GenerationResult,
    ProgressCallback,
    ProgressEvent,
    run_alone,
)
from bildwerk.engines.conditioning import encode_prompts
from bildwerk.engines.control import ControlSlot, controlnet_for
from bildwerk.engines.decode import decode_latents, vae_scale
from bildwerk.engines.denoise import DenoiseState, run_unet
from bildwerk.engines.embeddings import prepare_embeddings
from bildwerk.engines.hires import HiresPass, upscale_latents, upscale_picture
from bildwerk.engines.preview import approx_preview, latent_colours
from bildwerk.engines.schedulers import make_scheduler, scheduler_label
from bildwerk.engines.sizing import work_size
from bildwerk.engines.speed import (
    SPEED,
    SpeedSettings,
    apply_speed,
    keep_exact,
    speed_of,
    unet_call,
    warm_up,
)
from bildwerk.images.control import control_map, to_control_tensor
from bildwerk.images.crop import CropBox, composite_full, crop_for_inpaint, paste_back
from bildwerk.images.io import to_rgb
from bildwerk.images.masks import feather_mask, mask_is_empty, normalize_mask
from bildwerk.images.tensors import from_pil
from bildwerk.models.loader import LoadedModel, ModelManager, ModelSource
from bildwerk.models.vae import VaeChoice, choose_vae, load_vae


@dataclass
class _Work:
    """What one request turns into before the loop: the pictures at working size."""

    width: int
    height: int
    image: Image.Image | None = None  # RGB at working size
    mask: Image.Image | None = None  # L at working size, 255 = repaint
    original: Image.Image | None = None  # RGB, full size (inpaint paste-back)
    alpha: Image.Image | None = None  # feathered composite mask, full size
    box: CropBox | None = None  # crop in the original ("only masked")


def _to_tensor(image: Image.Image, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return from_pil([image]).to(device=device, dtype=dtype)


@dataclass
class LocalJob:
    """One request prepared by the local engine: its pictures, its denoising state, its clock."""

    request: GenerationRequest
    model: LoadedModel
    work: _Work
    seeds: list[int]
    emit: ProgressCallback
    t0: float
    timings: dict[str, float]
    state: DenoiseState | None = None  # None: nothing to denoise (an empty mask)
    adapters: ActiveSet = ()  # the LoRAs (adapter, weight) every UNet call of this job runs with
    loras: list[dict] = field(default_factory=list)  # what the record says about them
    embeddings: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The VAE this job encodes and decodes with (the model's own, or an override): per job, so
    # two batched jobs with different VAEs each decode with their own.
    vae: Any = None
    vae_choice: VaeChoice | None = None
    hires: HiresPass | None = None  # a second pass still to run, or running

    @property
    def pending_hires(self) -> bool:
        return self.hires is not None and not self.hires.started

    @property
    def done(self) -> bool:
        return self.state is None or (self.state.done and not self.pending_hires)

    @property
    def steps(self) -> tuple[int, int]:
        """Steps done and in all, both hires passes counted."""
        if self.state is None:
            return (0, 0)
        if self.hires is None:
            return (self.state.index, self.state.total)
        total = self.hires.first_total + self.hires.total
        return (self.state.index + (self.hires.first_total if self.hires.started else 0), total)

    @property
    def batch_key(self) -> tuple:
        # What must agree to concatenate into one UNet call: the network, the latent shape,
        # the text conditioning's shape and the added conditioning's (SDXL), and the LoRAs the
        # UNet computes with (adapters and weights): other LoRAs are another network.
        st = self.state
        assert st is not None
        c = st.conditioning
        added = tuple(sorted((k, tuple(v.shape[1:])) for k, v in (c.added or {}).items()))
        # ControlNets too: rows of one call go through the same networks, in the same order.
        controls = tuple(id(slot.net) for slot in st.controls)
        return (id(self.model.unet), tuple(st.latents.shape[1:]), tuple(c.cond.shape[1:]), added, controls,
                self.adapters)

    @property
    def rows(self) -> int:
        if self.state is None:
            return 0
        return self.state.latents.shape[0] * (2 if self.state.do_cfg else 1)

    @property
    def cells(self) -> int:
        if self.state is None:
            return 0
        return self.rows * int(self.state.latents.shape[2]) * int(self.state.latents.shape[3])


class DiffusersEngine:
    """Generates with local diffusers models; models are loaded once via the manager.

    Batch API: ``prepare`` (model, sizes, prompt encoding, initial noise), ``step`` (one UNet
    call for any number of prepared requests of one ``batch_key``), ``finish`` (decode, paste
    back, record). ``generate`` is the three for one request.
    """

    def __init__(self, models: ModelManager | None = None, *, speed: SpeedSettings | None = None) -> None:
        self.models = models or ModelManager()
        # The speed switches (engines/speed.py), applied to each model when the engine first uses it.
        self.speed = speed if speed is not None else SpeedSettings.from_env()

    # -- public -----------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> GenerationResult:
        return run_alone(self, request, on_progress=on_progress, cancel=cancel)

    def load(self, source: ModelSource | str | None) -> None:
        """Load a model ahead of its jobs (kept, as ``prepare`` would load it); with compilation
        on, also compile it for the configured sizes, so no job waits for that."""
        model = self._model(source)
        if not model.extras.get("warmed"):
            model.extras["warmed"] = True
            warm_up(self, model, source)

    def _model(self, source: ModelSource | str | None) -> LoadedModel:
        model = self.models.get(source)
        if SPEED not in model.extras:
            apply_speed(model, self.speed.resolve(model.device))
        return model

    def prepare(self, request: GenerationRequest, *, on_progress: ProgressCallback | None = None,
                source: ModelSource | None = None) -> LocalJob:
        t0 = time.perf_counter()
        emit = on_progress or (lambda _e: None)
        emit(ProgressEvent("load", 0, 1, 0.0))
        model = self._model(source if source is not None else request.model)
        keep_exact(model, model.unet)
        request, notes = _with_prompt_loras(request)
        loras = prepare_loras(model, request.loras)
        embeddings = prepare_embeddings(model, request)
        timings = {"load": time.perf_counter() - t0}
        work = self._prepare(request, model)
        seeds = [(request.seed or 0) + i for i in range(request.num_images)]
        choice = choose_vae(request.vae, model.extras.get("config", {}), model_name=model.name)
        vae = model.vae if choice is None else load_vae(
            choice, model.vae, device=model.device, cache=model.extras.setdefault("vaes", {}))
        job = LocalJob(request, model, work, seeds, emit, t0, timings, adapters=loras.active,
                       loras=loras.records, embeddings=embeddings, notes=notes + loras.notes,
                       vae=vae, vae_choice=choice)
        if work.mask is not None and mask_is_empty(work.mask):
            return job  # nothing to repaint: finish() returns the input untouched
        activate(model, job.adapters)  # a LoRA's text-encoder part changes the conditioning
        job.state = self._initial_state(request, model, work, seeds, vae)
        job.state.controls = self._controls(request, model, work)
        if request.hires is not None:
            job.hires = self._plan_hires(request, model, work, job.state.total)
        timings["prepare"] = time.perf_counter() - t0 - timings["load"]
        timings["denoise"] = 0.0
        return job

    def step(self, batch: Sequence[LocalJob]) -> None:
        if not batch:
            return
        t = time.perf_counter()
        first = batch[0]
        activate(first.model, first.adapters, first.request.loras)  # one batch_key: one LoRA set
        # Plain jobs may take the compiled UNet; LoRAs and ControlNets change layers per request.
        call = unet_call(first.model, plain=not first.adapters and not first.state.controls)  # type: ignore[union-attr]
        with torch.inference_mode():  # scheduler steps too: no autograd bookkeeping
            preds = run_unet(call, [job.state.unet_inputs() for job in batch])  # type: ignore[union-attr]
            for job, pred in zip(batch, preds, strict=True):
                job.state.advance(pred)  # type: ignore[union-attr]
        now = time.perf_counter()
        for job in batch:
            st = job.state
            assert st is not None
            job.timings["denoise"] += now - t
            if st.done and job.pending_hires:
                self._start_hires(job)  # the job stays in the batch, at its new shape
            done, total = job.steps
            second = job.hires is not None and job.hires.started
            job.emit(ProgressEvent("denoise", done, total, time.perf_counter() - job.t0,
                                   preview=lambda job=job: self.preview(job),
                                   detail=_pass_detail(job) if job.hires is not None else None,
                                   pass_index=2 if second else 1))

    def preview(self, job: LocalJob) -> Image.Image | None:
        """The first picture as it stands, from the scheduler's estimate of the clean latents (or
        the latents themselves): by the VAE's fitted latent-to-colour map (engines/preview.py),
        or with ``preview="vae"`` through the decoder, as costly as one image's decode."""
        st = job.state
        if st is None:
            return None
        lat = (st.denoised if st.denoised is not None else st.latents)[:1]
        speed = speed_of(job.model)
        if speed is not None and speed.preview == "vae":
            return self._decode(job, lat)[0]
        colours = latent_colours(job.model, job.vae, lambda x: self._encode_image(job.model, job.vae, x))
        f = vae_scale(job.vae)
        return approx_preview(colours, lat, (int(lat.shape[-1]) * f, int(lat.shape[-2]) * f))

    def finish(self, job: LocalJob) -> GenerationResult:
        work = job.work
        if job.state is None:
            assert work.original is not None
            images = [work.original.copy() for _ in job.seeds]
            return self._result(job, images, "none", ["mask is empty; image returned unchanged"])
        t2 = time.perf_counter()
        job.emit(ProgressEvent("decode", 0, 1, t2 - job.t0))
        images = self._decode(job, job.state.latents)
        images = [self._finish(work, im) for im in images]
        job.timings["decode"] = time.perf_counter() - t2
        job.timings["total"] = time.perf_counter() - job.t0
        job.emit(ProgressEvent("done", 1, 1, job.timings["total"]))
        notes = [f"ControlNet {s.name}: {s.unit.preprocessor}, scale {s.unit.scale:g}, "
                 f"steps {s.unit.start:g}-{s.unit.end:g}" for s in job.state.controls]
        return self._result(job, images, scheduler_label(job.state.scheduler), notes)

    # -- preparation ------------------------------------------------------------------------
    def _prepare(self, req: GenerationRequest, model: LoadedModel) -> _Work:
        native = model.native_size
        if req.mode is Mode.TEXT_TO_IMAGE:
            return _Work(*work_size(req, native))

        assert req.image is not None
        original = to_rgb(req.image)
        if req.mode is Mode.IMAGE_TO_IMAGE:
            w, h = work_size(req, native)
            image = original if original.size == (w, h) else original.resize((w, h), Image.LANCZOS)
            return _Work(width=w, height=h, image=image)

        # Inpaint.
        assert req.mask is not None
        mask = normalize_mask(req.mask, size=original.size, source=req.mask_source, invert=req.invert_mask)
        if mask_is_empty(mask):
            return _Work(width=original.width, height=original.height, mask=mask, original=original)
        alpha = feather_mask(mask, req.mask_blur)
        if req.only_masked:
            w, h = work_size(req, native)
            crop = crop_for_inpaint(original, mask, padding=req.only_masked_padding, work_size=(w, h))
            return _Work(w, h, image=crop.image, mask=crop.mask, original=original, alpha=alpha, box=crop.box)
        w, h = work_size(req, native)
        image = original.resize((w, h), Image.LANCZOS) if original.size != (w, h) else original
        work_mask = mask.resize((w, h), Image.NEAREST) if mask.size != (w, h) else mask
        return _Work(w, h, image=image, mask=work_mask, original=original, alpha=alpha)

    @staticmethod
    def _controls(req: GenerationRequest, model: LoadedModel, work: _Work) -> list[ControlSlot]:
        """Each ControlNet unit's network (kept) and control map at the working size; with only
        the masked region inpainted, the map is cut with the same box as the picture."""
        slots = []
        for unit in req.controls:
            net, name = controlnet_for(model, unit.model)
            crop = work.box.as_tuple() if work.box is not None else None
            frame = work.original.size if work.original is not None else None
            cmap = control_map(unit, (work.width, work.height), crop=crop, frame=frame)
            cond = to_control_tensor(cmap).to(device=model.device, dtype=model.dtype)
            slots.append(ControlSlot(net=net, cond=cond, unit=unit, name=name))
        return slots

    @torch.inference_mode()
    def _encode_image(self, model: LoadedModel, vae: Any, image: Image.Image | torch.Tensor) -> torch.Tensor:
        x = image if isinstance(image, torch.Tensor) else _to_tensor(image, model.device, vae.dtype)
        lat = vae.encode(x.to(device=model.device, dtype=vae.dtype)).latent_dist.mode()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((lat - shift) * vae.config.scaling_factor).to(model.dtype)

    @staticmethod
    def _decode(job: LocalJob, latents: torch.Tensor) -> list[Image.Image]:
        """Pictures of ``latents`` through the job's VAE, ``vae_batch`` per decoder call, tiled
        above ``vae_tile_above`` (engines/decode.py), as the job's model's settings say."""
        speed = speed_of(job.model)
        assert speed is not None  # set when the engine first took the model (_model)
        return decode_latents(job.vae, latents, batch=speed.vae_batch, tile_above=speed.vae_tile_above)

    def _noise(self, shape: tuple[int, ...], seeds: list[int], model: LoadedModel) -> tuple[torch.Tensor, list[torch.Generator]]:
        # Drawn on the CPU from one generator per image: the same seed gives the same
        # starting noise on any device and in any batch position.
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        noise = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in gens])
        return noise.to(device=model.device, dtype=model.dtype), gens

    @staticmethod
    def _schedule(sampler: str | None, model: LoadedModel, steps: int,
                  strength: float | None) -> tuple[Any, torch.Tensor]:
        """A fresh scheduler and the timesteps to run: all of them, or, starting from a picture,
        the last ``steps x strength`` of them (as diffusers' img2img does)."""
        scheduler = make_scheduler(sampler, model.pipe.scheduler)
        scheduler.set_timesteps(steps, device=model.device)
        t_start = 0
        if strength is not None:
            init_steps = min(max(int(round(steps * strength)), 1), steps)
            t_start = steps - init_steps
        timesteps = scheduler.timesteps[t_start * scheduler.order :]
        # Tell the scheduler where the loop starts: it cannot infer it when timesteps repeat
        # (Karras sigmas on a cosine schedule put several steps at t=998).
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        return scheduler, timesteps

    def _initial_state(
        self, req: GenerationRequest, model: LoadedModel, work: _Work, seeds: list[int], vae: Any
    ) -> DenoiseState:
        n = len(seeds)
        f = model.vae_scale_factor
        if work.width % f or work.height % f:
            raise InvalidRequestError(f"width and height must be multiples of {f} for this model")
        guidance = model.guidance_for(req.guidance)
        do_cfg = guidance > 1.0
        cond = encode_prompts(
            model, req.prompt, req.negative_prompt, num_images=n, do_cfg=do_cfg,
            width=work.width, height=work.height,
        )
        from_picture = req.mode is not Mode.TEXT_TO_IMAGE
        scheduler, timesteps = self._schedule(req.scheduler, model, req.steps,
                                              req.strength if from_picture else None)
        latent_ch = int(model.vae.config.latent_channels)
        shape = (1, latent_ch, work.height // f, work.width // f)
        noise, gens = self._noise(shape, seeds, model)
        state_kw: dict = {}

        if req.mode is Mode.TEXT_TO_IMAGE:
            latents = noise * scheduler.init_noise_sigma
        else:
            assert work.image is not None
            image_latents = self._encode_image(model, vae, work.image).repeat(n, 1, 1, 1)
            if req.mode is Mode.INPAINT and req.strength >= 1.0:
                latents = noise * scheduler.init_noise_sigma
            else:
                latents = scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(n))
            if req.mode is Mode.INPAINT:
                assert work.mask is not None
                pix_mask = torch.from_numpy(np.asarray(work.mask, dtype=np.float32) / 255.0)
                pix_mask = (pix_mask[None, None] > 0.5).float()
                # Max-pool so every latent cell touching the mask is repainted.
                lat_mask = F.max_pool2d(pix_mask, kernel_size=f) if f > 1 else pix_mask
                lat_mask = lat_mask.to(device=model.device, dtype=model.dtype).repeat(n, 1, 1, 1)
                state_kw.update(mask=lat_mask, noise=noise, image_latents=image_latents)
                if model.unet_in_channels == 9:
                    keep = 1.0 - pix_mask.to(model.device)
                    masked = _to_tensor(work.image, model.device, torch.float32) * keep
                    state_kw["masked_image_latents"] = self._encode_image(model, vae, masked).repeat(n, 1, 1, 1)
        if model.unet_in_channels == 9 and "mask" not in state_kw:
            state_kw.update(self._all_masked(model, vae, work.width, work.height, n))
        return DenoiseState(
            scheduler=scheduler,
            timesteps=timesteps,
            latents=latents,
            conditioning=cond,
            guidance=guidance,
            generators=gens,
            unet_in_channels=model.unet_in_channels,
            **state_kw,
        )

    def _all_masked(self, model: LoadedModel, vae: Any, width: int, height: int, n: int) -> dict:
        """An inpainting UNet asked for a whole new picture: everything is "masked", the masked
        image is all grey (zeros), as the model saw in training."""
        f = model.vae_scale_factor
        grey = torch.zeros((1, 3, height, width), device=model.device)
        return {"mask": torch.ones((n, 1, height // f, width // f), device=model.device, dtype=model.dtype),
                "masked_image_latents": self._encode_image(model, vae, grey).repeat(n, 1, 1, 1)}

    # -- hires fix --------------------------------------------------------------------------
    def _plan_hires(self, req: GenerationRequest, model: LoadedModel, work: _Work, first_total: int) -> HiresPass:
        """The second pass's sizes and length, known before the first step (progress counts both)."""
        assert req.hires is not None
        try:
            sizes = hires_sizes(work.width, work.height, req.hires)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        f = model.vae_scale_factor
        if any(side % f for side in (*sizes.upscaled, *sizes.final)):
            raise InvalidRequestError(f"hires sizes must be multiples of {f} for this model")
        steps = second_pass_steps(req.hires, req.steps)
        _, timesteps = self._schedule(req.scheduler, model, steps, req.hires.strength)
        return HiresPass(req.hires, sizes, steps, len(timesteps), first_total)

    def _start_hires(self, job: LocalJob) -> None:
        """The first pass is done: upscale its result, add the second pass's noise (from the
        job's own generators, continued: the same seeds give the same picture, alone or
        batched) and start denoising again at the larger size."""
        t = time.perf_counter()
        hp, model, first = job.hires, job.model, job.state
        assert hp is not None and first is not None
        req, h = job.request, hp.hires
        n, f = first.latents.shape[0], model.vae_scale_factor
        (fw, fh) = hp.sizes.final
        with torch.inference_mode():
            if h.is_latent:
                image_latents = upscale_latents(first.latents, hp.sizes, h.upscaler, f)
            else:
                pictures = [upscale_picture(im, hp.sizes, h.upscaler) for im in self._decode(job, first.latents)]
                image_latents = torch.cat([self._encode_image(model, job.vae, im) for im in pictures])
            scheduler, timesteps = self._schedule(req.scheduler, model, hp.steps, h.strength)
            shape = (1, int(image_latents.shape[1]), fh // f, fw // f)
            noise = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in first.generators])
            noise = noise.to(device=model.device, dtype=model.dtype)
            latents = scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(n))
            guidance = first.guidance
            activate(model, job.adapters, job.request.loras)  # its LoRAs' text-encoder part, as for the first pass
            prompt = h.prompt if h.prompt is not None else req.prompt
            negative = h.negative_prompt if h.negative_prompt is not None else req.negative_prompt
            cond = encode_prompts(model, prompt, negative, num_images=n, do_cfg=first.do_cfg,
                                  width=fw, height=fh)
            state_kw = self._all_masked(model, job.vae, fw, fh, n) if model.unet_in_channels == 9 else {}
        job.state = DenoiseState(scheduler=scheduler, timesteps=timesteps, latents=latents, conditioning=cond,
                                 guidance=guidance, generators=first.generators,
                                 unet_in_channels=model.unet_in_channels, **state_kw)
        if first.controls:
            # ControlNet guides the hires pass too, its control maps made at the final size.
            job.state.controls = self._controls(req, model, _Work(fw, fh))
        hp.started = True
        hp.seconds = time.perf_counter() - t
        job.timings["hires_upscale"] = hp.seconds

    # -- finishing --------------------------------------------------------------------------
    @staticmethod
    def _finish(work: _Work, generated: Image.Image) -> Image.Image:
        if work.original is None or work.alpha is None:
            return generated
        if work.box is not None:
            return paste_back(work.original, generated, work.box, work.alpha)
        return composite_full(work.original, generated, work.alpha)

    @staticmethod
    def _result(job: LocalJob, images: list[Image.Image], scheduler: str, notes: list[str]) -> GenerationResult:
        req, model, work = job.request, job.model, job.work
        notes = job.notes + notes
        w, h = images[0].size
        details: dict[str, Any] = {}
        if work.box:
            notes.append(f"inpainted region {work.box.as_tuple()} at {work.width}x{work.height}")
        if job.hires is not None and job.hires.started:
            hp = job.hires
            details["hires"] = hp.describe()
            first, final = hp.sizes.first, hp.sizes.final
            cut = f", upscaled to {hp.sizes.upscaled[0]}x{hp.sizes.upscaled[1]} and cropped" if hp.sizes.crop != (0, 0) else ""
            notes.append(f"hires fix: first pass at {first[0]}x{first[1]}, {hp.hires.upscaler} upscale to "
                         f"{final[0]}x{final[1]}{cut}, second pass of {hp.total} steps at strength {hp.hires.strength}")
        if job.vae_choice is not None:
            details["vae"] = job.vae_choice.describe()
            origin = "asked for" if job.vae_choice.origin == "request" else "named by the model's bildwerk.json"
            notes.append(f"VAE {job.vae_choice.name} ({origin}) instead of the model's own")
        return GenerationResult(
            request=req,
            images=images,
            seeds=job.seeds,
            model=model.describe(),
            scheduler=scheduler,
            guidance=model.guidance_for(req.guidance),
            width=w,
            height=h,
            timings=job.timings,
            notes=notes,
            loras=job.loras,
            embeddings=job.embeddings,
            details=details,
        )


def _with_prompt_loras(request: GenerationRequest) -> tuple[GenerationRequest, list[str]]:
    """LoRA tags still in the prompt (a request that did not pass the prompt steps) taken out and
    merged with its ``loras`` field, as the prompt steps would have done."""
    prompt, tags = extract_lora_tags(request.prompt)
    if not tags:
        return request, []
    merged, notes = merge_loras(request.loras, tags)
    return request.model_copy(update={"prompt": prompt, "loras": merged}), notes


def _pass_detail(job: LocalJob) -> str:
    """What a hires job is doing now, for progress lines: which pass, at which size."""
    hp = job.hires
    assert hp is not None
    if hp.started:
        return f"hires pass at {hp.sizes.final[0]}x{hp.sizes.final[1]}"
    return f"first pass at {hp.sizes.first[0]}x{hp.sizes.first[1]}"
