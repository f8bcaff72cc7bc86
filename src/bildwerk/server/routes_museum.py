"""The museum's endpoint: a visitor's mask on the map, a prompt in any language, a PNG back.

One JSON call: the map section and the painted mask as data URLs, the visitor's words, the
model choice (``local`` — the server's model —, ``remote`` — the OpenAI Images API —, or any
model name) and a text-fidelity value. bildwerk crops around the mask with context,
inpaints, and pastes back so nothing outside the mask changes; the request, the prompt steps
(language, translation, the museum's lexicon enhancement), the input, the mask and the
result are kept in the history like every job.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import ConfigDict, Field

from bildwerk.core.bounds import (
    MAX_MASK_BLUR,
    MAX_MASK_PADDING,
    MAX_MODEL_REF_CHARS,
    MAX_NAME_CHARS,
    MAX_SEED,
    MAX_STEPS,
)
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.spec import JobSpec
from bildwerk.server.app import state
from bildwerk.server.common import b64_image, result_pngs_async, submit_and_wait
from bildwerk.server.errors import JOB_HEADER
from bildwerk.server.schemas import StrictBody

router = APIRouter(prefix="/api/v1/museum", tags=["museum"])


class MuseumInpaintIn(StrictBody):
    model_config = ConfigDict(extra="forbid", strict=True)

    image: str = Field(description="The map section: a data URL (or plain base64) of a PNG/JPEG/WebP.")
    mask: str = Field(description="Same size; white (or transparent) where something new should appear.")
    prompt: str = Field(min_length=1, max_length=500, description="What should appear, in any language.")
    model: str = Field(default="local", max_length=MAX_MODEL_REF_CHARS, description="local, remote, or a model name.")
    text_fidelity: float = Field(default=0.5, ge=0.0, le=1.0,
                                 description="0 = free, 0.5 = the model's recommended guidance, 1 = twice that.")
    language: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="The prompt's language if known (de, en, ...).")
    enhance: bool = Field(default=True, description="Add the curated lexicon details to known terms.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    mask_blur: int = Field(default=8, ge=0, le=MAX_MASK_BLUR)
    padding: int = Field(default=32, ge=0, le=MAX_MASK_PADDING)


def guidance_for_fidelity(fidelity: float, recommended: float) -> float:
    """0 -> 1 (no guidance), 0.5 -> the model's recommendation, 1 -> twice it; linear between."""
    if fidelity <= 0.5:
        return round(1.0 + (recommended - 1.0) * fidelity / 0.5, 3)
    return round(recommended * (1.0 + (fidelity - 0.5) / 0.5), 3)


@router.post("/inpaint")  # answers image/png: see server/openapi.py
async def museum_inpaint(body: MuseumInpaintIn, request: Request) -> Response:
    from bildwerk.models.loader import recommended_guidance

    st = state(request)
    if body.model == "local":
        model = st.settings.model
    elif body.model == "remote":
        model = st.settings.remote_model
    else:
        model = body.model
    options = PromptOptions(language=body.language, enhance=body.enhance)

    def spec() -> JobSpec:  # in a worker thread: decoding and reading the model's card
        source = st.service.check_model(model)  # the policy first: never read a refused model's card
        guidance = guidance_for_fidelity(body.text_fidelity, recommended_guidance(source))
        return JobSpec.build(origin="museum", options=options, image=b64_image(st, body.image, "image"),
                             mask=b64_image(st, body.mask, "mask"), mode="inpaint", prompt=body.prompt,
                             model=model, guidance=guidance, seed=body.seed, steps=body.steps,
                             mask_blur=body.mask_blur, only_masked=True, only_masked_padding=body.padding,
                             mask_source="auto",
                             # what the visitor chose, in the museum's words (guidance is derived)
                             origin_inputs={"model": body.model, "text_fidelity": body.text_fidelity})

    row = await submit_and_wait(st, spec, api="museum")
    png = (await result_pngs_async(st, row))[0]
    return Response(png, media_type="image/png",
                    headers={JOB_HEADER: row.id, "X-Content-Type-Options": "nosniff"})
