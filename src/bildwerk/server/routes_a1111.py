"""AUTOMATIC1111-compatible ``/sdapi/v1``: existing A1111 clients and scripts work unchanged.

Calls are synchronous as in A1111, but every one is a job in the persistent queue (history,
metrics and restarts treat them like any other). Unknown A1111 fields are accepted and
ignored, as A1111 itself does for fields of extensions it lacks.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ConfigDict, Field

from bildwerk.core.bounds import (
    MAX_IMAGES,
    MAX_MASK_BLUR,
    MAX_MASK_PADDING,
    MAX_MODEL_REF_CHARS,
    MAX_NAME_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MIN_SIDE,
)
from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.hires import A1111_UPSCALERS, DEFAULT_SCALE
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.samplers import SAMPLERS, canonical_sampler_name
from bildwerk.core.spec import JobSpec
from bildwerk.images.io import base64_image_bytes
from bildwerk.images.metadata import read_png_metadata
from bildwerk.server.a1111_controlnet import control_units_from_scripts
from bildwerk.server.app import state
from bildwerk.server.common import b64_image, result_pngs, submit_and_wait
from bildwerk.server.routes_a1111_models import checkpoint_from_title, title_of
from bildwerk.server.schemas import StrictBody, sent_fields

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"])


class A1111Options(StrictBody):
    """A1111's settings (``override_settings`` and POST /options): bildwerk reads the checkpoint;
    the many others A1111 clients send are accepted and ignored."""

    model_config = ConfigDict(extra="allow", strict=True)

    sd_model_checkpoint: str | None = Field(default=None, max_length=MAX_MODEL_REF_CHARS)
    sd_vae: str | None = Field(default=None, max_length=MAX_NAME_CHARS,
                               description="A VAE by name; Automatic or None: the model's own.")


class _A1111Base(StrictBody):
    model_config = ConfigDict(extra="allow", strict=True)  # A1111 clients send many fields we do not use

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list, max_length=8)
    seed: int = Field(default=-1, ge=-1, le=MAX_SEED, description="-1: a random seed.")
    steps: int = Field(default=20, ge=1, le=MAX_STEPS)
    cfg_scale: float | None = Field(default=None, ge=0, le=30)  # unset: the model's recommended value
    width: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)  # unset: the model's size
    height: int | None = Field(default=None, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8)
    batch_size: int = Field(default=1, ge=1, le=MAX_IMAGES)
    n_iter: int = Field(default=1, ge=1, le=MAX_IMAGES)
    sampler_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    sampler_index: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    scheduler: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    override_settings: A1111Options = Field(default_factory=A1111Options)
    alwayson_scripts: dict[str, Any] = Field(
        default_factory=dict, description="Extensions' arguments; bildwerk reads sd-webui-controlnet's "
        "(controlnet.args: units with module, model, weight, image, guidance_start/end, threshold_a/b).")


class Txt2ImgIn(_A1111Base):
    # Hires fix (A1111's names and defaults); read only with enable_hr.
    enable_hr: bool = False
    hr_scale: float = Field(default=DEFAULT_SCALE, ge=0, le=16)  # bounded as hires.scale when used
    hr_upscaler: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    hr_second_pass_steps: int = Field(default=0, ge=0, le=MAX_STEPS)
    hr_resize_x: int = Field(default=0, ge=0, le=MAX_SIDE)
    hr_resize_y: int = Field(default=0, ge=0, le=MAX_SIDE)
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    # The hires pass's strength; clients send 0 when hires is off, so 0 is refused only with enable_hr.
    denoising_strength: float = Field(default=0.75, ge=0, le=1)


class Img2ImgIn(_A1111Base):
    init_images: list[str] = Field(default_factory=list, max_length=8)
    mask: str | None = None
    mask_blur: int = Field(default=4, ge=0, le=MAX_MASK_BLUR)
    inpaint_full_res: bool | int = True
    inpaint_full_res_padding: int = Field(default=32, ge=0, le=MAX_MASK_PADDING)
    inpainting_mask_invert: int = Field(default=0, ge=0, le=1)
    denoising_strength: float = Field(default=0.75, gt=0, le=1)
    resize_mode: int = Field(default=0, ge=0, le=3)


def _sampler(body: _A1111Base) -> str | None:
    name = body.sampler_name or body.sampler_index
    if not name:
        return None
    if body.scheduler and body.scheduler.lower() == "karras" and "karras" not in name.lower():
        try:
            return canonical_sampler_name(f"{name} Karras")
        except ValueError:
            pass
    return name


def _hires(body: Txt2ImgIn) -> dict[str, Any] | None:
    """A1111's hires fields as the request's ``hires``: a scale or a resize target (0 = unset)."""
    if not body.enable_hr:
        return None
    out: dict[str, Any] = {"upscaler": body.hr_upscaler or "Latent", "strength": body.denoising_strength,
                           "steps": body.hr_second_pass_steps}
    if body.denoising_strength <= 0:
        raise InvalidRequestError("enable_hr needs denoising_strength above 0 (A1111's default is 0.75)")
    if body.hr_resize_x or body.hr_resize_y:
        out.update(width=body.hr_resize_x or None, height=body.hr_resize_y or None)
    elif body.hr_scale > 1.0:
        out["scale"] = body.hr_scale
    else:
        raise InvalidRequestError("enable_hr needs hr_scale above 1 or hr_resize_x/hr_resize_y")
    if body.hr_prompt:
        out["prompt"] = body.hr_prompt
    if body.hr_negative_prompt:
        out["negative_prompt"] = body.hr_negative_prompt
    return out


def _fields(st, body: _A1111Base) -> tuple[dict[str, Any], PromptOptions | None]:
    n = body.batch_size * body.n_iter
    if not 1 <= n <= MAX_IMAGES:
        raise InvalidRequestError(f"batch_size x n_iter must be between 1 and {MAX_IMAGES}, got {n}")
    model = checkpoint_from_title(body.override_settings.sd_model_checkpoint) or st.a1111_model
    vae = body.override_settings.sd_vae if "sd_vae" in body.override_settings.model_fields_set else st.a1111_vae
    fields = dict(prompt=body.prompt, negative_prompt=body.negative_prompt,
                  seed=None if body.seed is None or body.seed < 0 else body.seed, steps=body.steps,
                  guidance=body.cfg_scale, width=body.width, height=body.height, num_images=n,
                  scheduler=_sampler(body), model=model, vae=vae,
                  origin_inputs=sent_fields(body, "batch_size", "n_iter", "sampler_name", "sampler_index", "scheduler",
                                      "cfg_scale"))
    options = None
    if body.styles:
        if len(body.styles) > 1:
            raise InvalidRequestError("bildwerk applies one style per request")
        options = PromptOptions(style=body.styles[0])
    return fields, options


def _answer(st, body: _A1111Base, row) -> dict:
    pngs = result_pngs(st, row)
    record = row.record or {}
    req = record.get("request", {})
    seeds = [r.seed for r in sorted(row.results, key=lambda r: r.idx)]
    infotexts = [read_png_metadata(p)["parameters"] or "" for p in pngs]
    info = {
        "prompt": req.get("prompt", body.prompt), "negative_prompt": req.get("negative_prompt", ""),
        "all_prompts": [req.get("prompt", body.prompt)] * len(pngs), "seed": seeds[0] if seeds else None,
        "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * len(seeds), "steps": req.get("steps"),
        "cfg_scale": record.get("guidance"), "sampler_name": record.get("scheduler"),
        "width": record.get("width"), "height": record.get("height"), "sd_model_name": (record.get("model") or {}).get("name"),
        "batch_size": body.batch_size, "job_timestamp": row.created_at, "infotexts": infotexts,
        "bildwerk_job": row.id, "bildwerk_warnings": req.get("warnings", []),
    }
    parameters = body.model_dump(exclude={"init_images", "mask"})
    return {"images": [base64.b64encode(p).decode() for p in pngs], "parameters": parameters,
            "info": json.dumps(info, ensure_ascii=False)}


@router.post("/txt2img")
async def txt2img(body: Txt2ImgIn, request: Request, response: Response) -> dict:
    st = state(request)
    fields, options = _fields(st, body)
    fields["hires"] = _hires(body)
    if body.enable_hr:
        fields["origin_inputs"].update(sent_fields(body, "enable_hr", "hr_scale", "hr_upscaler", "hr_resize_x",
                                                   "hr_resize_y", "hr_second_pass_steps", "denoising_strength"))

    def spec() -> JobSpec:
        return JobSpec.build(origin="a1111", options=options, mode="text-to-image",
                             controls=control_units_from_scripts(st, body.alwayson_scripts), **fields)

    row = await submit_and_wait(st, spec, api="a1111", response=response)
    return await asyncio.to_thread(_answer, st, body, row)


@router.post("/img2img")
async def img2img(body: Img2ImgIn, request: Request, response: Response) -> dict:
    st = state(request)
    if not body.init_images:
        raise InvalidRequestError("init_images needs one image (base64)")
    fields, options = _fields(st, body)
    fields.update(strength=body.denoising_strength)
    if body.mask:
        fields.update(mode="inpaint", mask_blur=body.mask_blur, only_masked=bool(body.inpaint_full_res),
                      only_masked_padding=body.inpaint_full_res_padding,
                      invert_mask=bool(body.inpainting_mask_invert), mask_source="auto")
    else:
        fields["mode"] = "image-to-image"

    def spec() -> JobSpec:
        return JobSpec.build(origin="a1111", options=options, image=b64_image(st, body.init_images[0], "init image"),
                             mask=b64_image(st, body.mask, "mask"),
                             controls=control_units_from_scripts(st, body.alwayson_scripts, body.init_images[0]),
                             **fields)

    row = await submit_and_wait(st, spec, api="a1111", response=response)
    return await asyncio.to_thread(_answer, st, body, row)


@router.get("/progress")
def progress(request: Request) -> dict:
    svc = state(request).service
    running = svc.running()
    job = running[0] if running else None
    queued = svc.store.count("queued")
    if job is None:
        return {"progress": 0.0, "eta_relative": 0.0, "current_image": None, "textinfo": None,
                "state": {"skipped": False, "interrupted": False, "job": "", "job_count": queued,
                          "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}}
    d = svc.progress_of(job) or {"fraction": 0.0, "step": 0, "total": 0, "elapsed": 0.0}
    frac = d["fraction"]
    eta = d["elapsed"] / frac * (1 - frac) if frac > 0 else 0.0
    return {"progress": frac, "eta_relative": round(eta, 3), "current_image": None, "textinfo": None,
            "state": {"skipped": False, "interrupted": svc.is_cancelling(job), "job": job,
                      "job_count": queued + len(running), "job_timestamp": "0", "job_no": 0,
                      "sampling_step": d["step"], "sampling_steps": d["total"]}}


@router.post("/interrupt")
def interrupt(request: Request) -> dict:
    svc = state(request).service
    for job_id in svc.running():  # A1111 has one job at a time; here, all that run now
        svc.cancel(job_id)
    return {}


class ImageIn(StrictBody):
    image: str
    model: str | None = Field(default=None, max_length=MAX_NAME_CHARS)


@router.post("/png-info")
def png_info(body: ImageIn, request: Request) -> dict:
    st = state(request)
    raw = base64_image_bytes(body.image, limits=st.limits)
    meta = read_png_metadata(raw, limits=st.limits)
    return {"info": meta["parameters"] or "", "items": {"parameters": meta["parameters"] or ""},
            "parameters": meta["parsed"], "bildwerk": meta["record"]}


@router.post("/interrogate")
def interrogate(body: ImageIn, request: Request) -> dict:
    """A caption of the image: bildwerk's describer (offline by default; see docs/prompts.md)."""
    from bildwerk.prompts.describe import describer

    image = b64_image(state(request), body.image, "image")
    spec = None if body.model in (None, "", "clip", "deepdanbooru") else body.model
    return {"caption": describer(spec).describe(image).text}


@router.get("/samplers")
def samplers() -> list[dict]:
    return [{"name": s.name, "aliases": list(s.aliases), "options": {}} for s in SAMPLERS]


@router.get("/schedulers")
def schedulers() -> list[dict]:
    return [{"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1,
             "need_inner_model": False},
            {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0,
             "need_inner_model": False}]


@router.get("/upscalers")
def upscalers() -> list[dict]:
    """The picture upscalers a hires pass can use (the latent ones: /latent-upscale-modes)."""
    names = ["None", *(k for k, v in A1111_UPSCALERS.items() if not v.startswith("latent"))]
    return [{"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4.0} for n in names]


@router.get("/latent-upscale-modes")
def latent_upscale_modes() -> list[dict]:
    return [{"name": k} for k, v in A1111_UPSCALERS.items() if v.startswith("latent")]


@router.get("/options")
def get_options(request: Request) -> dict:
    st = state(request)
    return {"sd_model_checkpoint": title_of(request, st.a1111_model), "sd_vae": st.a1111_vae or "Automatic",
            "samples_format": "png"}


@router.post("/options")
def set_options(body: A1111Options, request: Request) -> dict:
    st = state(request)
    if "sd_model_checkpoint" in body.model_fields_set:
        ref = checkpoint_from_title(body.sd_model_checkpoint) or None  # "name [hash]" as listed
        ref = st.settings.model if ref in (None, "default") else ref  # "default": the server's model
        st.service.check_model(ref)  # refused or unknown -> 404 now, not at the next call
        st.a1111_model = ref
    if "sd_vae" in body.model_fields_set:
        from bildwerk.core.request import build_request
        from bildwerk.models.vae import choose_vae

        name = build_request(vae=body.sd_vae).vae  # Automatic / None / "" -> the model's own
        if name is not None:
            choose_vae(name, {})  # unknown -> 404, a pickle -> 400, now
        st.a1111_vae = name
    return {}
