"""REST schemas derived from the vocabulary (core/), not copied from it.

A REST body names every request field as optional (unset: the model's or bildwerk's
default), with the same types, bounds and descriptions as ``GenerationRequest``; images
arrive as base64 or data URLs instead of decoded pictures.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from bildwerk.core.prompt import PromptOptions
from bildwerk.core.request import GenerationRequest

_NOT_FROM_CLIENTS = {"image", "mask", "prompt_record"}


def _optional_request_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in GenerationRequest.model_fields.items():
        if name in _NOT_FROM_CLIENTS:
            continue
        base = info.annotation
        annotated = Annotated[base, *info.metadata] if info.metadata else base  # type: ignore[valid-type]
        fields[name] = (annotated | None, Field(default=None, description=info.description))
    return fields


class _JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(default=None, description="Input image: base64 or a data: URL.")
    mask: str | None = Field(default=None, description="Inpainting mask: white = change, or alpha 0 = change.")
    prompt_options: PromptOptions | None = None


JobIn = create_model(  # type: ignore[call-overload]
    "JobIn", __base__=_JobBase, __doc__="A generation. Unset fields take the model's or bildwerk's defaults.",
    **_optional_request_fields())


def request_fields(body: BaseModel) -> dict[str, Any]:
    """The request fields a client set (images and prompt options apart)."""
    return body.model_dump(exclude={"image", "mask", "prompt_options"}, exclude_none=True)
