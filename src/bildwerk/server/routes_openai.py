"""OpenAI-compatible ``/v1/images``: the official SDK (``base_url`` pointed here) works.

``model`` may be any model the server lets its clients name (docs/service.md), or
``openai:MODEL`` for the real remote API; OpenAI's own names (dall-e-2, dall-e-3,
gpt-image-*) and none mean the server's default model, since SDKs send them by default. Edits follow OpenAI's convention: the
mask's transparent pixels (alpha 0) are the ones to change; without a mask, the image's
own transparency is the mask. An edit without a mask on a local model is a variation guided
by words such as "make it a watercolor": the input is described by the offline describer and
the description merged with the edit (the prompt record shows both steps), as the native
vary does with ``describe``; a remote model sees the picture itself.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import ConfigDict, Field

from bildwerk.core.bounds import MAX_IMAGES, MAX_MODEL_REF_CHARS, MAX_PROMPT_CHARS, MAX_SEED
from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.refs import is_remote_model
from bildwerk.core.spec import JobSpec
from bildwerk.server.app import state
from bildwerk.server.common import decode_upload, result_pngs, submit_and_wait, upload_bytes
from bildwerk.server.schemas import StrictBody, sent_fields

router = APIRouter(prefix="/v1/images", tags=["OpenAI"])
_OPENAI_NAMES = re.compile(r"^(dall-e-\d|gpt-image.*)$")


def _model(st, name: str | None) -> str | None:
    if not name or _OPENAI_NAMES.match(name):
        return st.settings.model
    return name


def _sent_form(**fields: str | None) -> dict[str, str]:
    """The form fields a client set that become something else (a model name, a size)."""
    return {k: v for k, v in fields.items() if v is not None}


def _size(size: str | None) -> tuple[int | None, int | None]:
    if size in (None, "", "auto"):
        return None, None
    m = re.fullmatch(r"(\d{2,4})x(\d{2,4})", size)
    if not m:
        raise InvalidRequestError(f"size must look like 1024x1024, got {size!r}")
    return int(m.group(1)), int(m.group(2))


def _answer(st, row, response_format: str | None) -> dict:
    base = st.settings.base_url  # configured, never the request's Host (a forged one would be echoed)
    revised = (row.record or {}).get("request", {}).get("prompt")
    data = []
    for r, png in zip(sorted(row.results, key=lambda r: r.idx), result_pngs(st, row), strict=True):
        item = {"revised_prompt": revised}
        if response_format == "url":
            item["url"] = f"{base}/api/v1/images/{r.sha256}"
        else:
            item["b64_json"] = base64.b64encode(png).decode()
        data.append(item)
    return {"created": int(time.time()), "data": data}


class GenerationsIn(StrictBody):
    model_config = ConfigDict(extra="allow", strict=True)  # quality, style, user, background, ...

    prompt: str
    model: str | None = Field(default=None, max_length=MAX_MODEL_REF_CHARS)
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: str | None = Field(default=None, max_length=16)
    response_format: Literal["b64_json", "url"] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)  # not OpenAI's, but bildwerk's records are reproducible


@router.post("/generations")
async def generations(body: GenerationsIn, request: Request, response: Response) -> dict:
    st = state(request)
    w, h = _size(body.size)
    fields = dict(mode="text-to-image", prompt=body.prompt, num_images=body.n, width=w, height=h,
                  model=_model(st, body.model), seed=body.seed,
                  origin_inputs=sent_fields(body, "model", "size", "quality", "style"))
    row = await submit_and_wait(st, lambda: JobSpec.build(origin="openai", **fields), api="openai", response=response)
    return await asyncio.to_thread(_answer, st, row, body.response_format)


@router.post("/edits")
async def edits(request: Request, response: Response, image: UploadFile | None = File(None),
                image_list: list[UploadFile] | None = File(None, alias="image[]"),
                mask: UploadFile | None = File(None), prompt: str = Form(..., max_length=MAX_PROMPT_CHARS),
                model: str | None = Form(None, max_length=MAX_MODEL_REF_CHARS),
                n: int = Form(1, ge=1, le=MAX_IMAGES), size: str | None = Form(None, max_length=16),
                response_format: Literal["b64_json", "url"] | None = Form(None)) -> dict:
    st = state(request)
    upload = image or (image_list[0] if image_list else None)
    if upload is None:
        raise InvalidRequestError("image is required")
    image_data = await upload_bytes(st, upload, "image")
    mask_data = await upload_bytes(st, mask, "mask")
    w, h = _size(size)
    fields = dict(prompt=prompt, num_images=n, width=w, height=h, model=_model(st, model),
                  origin_inputs=_sent_form(model=model, size=size))

    def spec() -> JobSpec:
        img = decode_upload(st, image_data, "image")
        msk = decode_upload(st, mask_data, "mask")
        options = None
        if msk is None and img.mode in ("RGBA", "LA"):
            msk = img.getchannel("A")  # OpenAI: without a mask, the image's transparency is the mask
            fields.update(mode="inpaint", mask_source="luminance", invert_mask=True)
        elif msk is not None:
            if msk.mode not in ("RGBA", "LA"):
                raise InvalidRequestError("the mask must have an alpha channel: transparent pixels are the ones to change")
            fields.update(mode="inpaint", mask_source="alpha")
        else:
            fields.update(mode="image-to-image")
            if not is_remote_model(fields["model"]):
                # A local model cannot read the instruction off the picture: say what is in it.
                options = PromptOptions(describe="local")
        return JobSpec.build(origin="openai", image=img.convert("RGB"), mask=msk, options=options, **fields)

    row = await submit_and_wait(st, spec, api="openai", response=response)
    return await asyncio.to_thread(_answer, st, row, response_format)


@router.post("/variations")
async def variations(request: Request, response: Response, image: UploadFile = File(...),
                     model: str | None = Form(None, max_length=MAX_MODEL_REF_CHARS),
                     n: int = Form(1, ge=1, le=MAX_IMAGES), size: str | None = Form(None, max_length=16),
                     response_format: Literal["b64_json", "url"] | None = Form(None)) -> dict:
    st = state(request)
    data = await upload_bytes(st, image, "image")
    w, h = _size(size)
    fields = dict(mode="image-to-image", prompt="", num_images=n, width=w, height=h, model=_model(st, model),
                  origin_inputs=_sent_form(model=model, size=size))

    def spec() -> JobSpec:
        return JobSpec.build(origin="openai", image=decode_upload(st, data, "image").convert("RGB"), **fields)

    row = await submit_and_wait(st, spec, api="openai", response=response)
    return await asyncio.to_thread(_answer, st, row, response_format)
