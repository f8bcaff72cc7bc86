"""REST schemas derived from the vocabulary (core/), not copied from it.

A REST body names every request field as optional (unset: the model's or bildwerk's
default), with the same types, bounds and descriptions as ``GenerationRequest``; images
arrive as base64 or data URLs instead of decoded pictures.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict, create_model, model_validator

from bildwerk.core.prompt import PromptOptions
from bildwerk.core.request import GenerationRequest
from bildwerk.core.text import text_problem

MAX_DEPTH = 32  # nesting a body may have (extension fields of A1111 clients included)
# Longer ASCII strings are image data (no text field may hold more; their own bounds say
# so): scanning megabytes of base64 here would hold the event loop for tens of milliseconds.
# ``isascii`` is a fast scan, and ASCII holds no surrogates.
MAX_CHECKED_CHARS = 64 * 1024


def _first_text_problem(value: Any, where: str, depth: int = 0) -> str | None:
    """The first string anywhere in a JSON value (keys too) that is not storable text."""
    if depth > MAX_DEPTH:
        return f"{where or 'body'}: nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        if len(value) > MAX_CHECKED_CHARS and value.isascii():
            return None  # image data: the base64 decoder refuses anything but base64 characters
        problem = text_problem(value)
        return f"{where or 'body'}: {problem}" if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            found = _first_text_problem(key, path, depth + 1) if isinstance(key, str) else None
            found = found or _first_text_problem(item, path, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_text_problem(item, f"{where}[{i}]", depth + 1)
            if found:
                return found
    return None


class StrictBody(BaseModel):
    """A JSON body as clients must send it: types as declared (``"steps": "2"`` or ``true`` is a
    400, not 2 or 1), and every string, wherever it sits, storable text (no NUL or other control
    characters, no unpaired surrogates: they would reach SQLite, PNG chunks and logs)."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        problem = _first_text_problem(data, "")
        if problem:
            raise ValueError(problem)
        return data


class PromptOptionsIn(PromptOptions):
    """The prompt options as a REST body: the same fields, strict types."""

    model_config = ConfigDict(extra="forbid", strict=True)

_NOT_FROM_CLIENTS = {"image", "mask", "prompt_record"}


def _optional_request_fields() -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in GenerationRequest.model_fields.items():
        if name in _NOT_FROM_CLIENTS:
            continue
        base = info.annotation
        metadata = list(info.metadata)
        if isinstance(base, type) and issubclass(base, Enum):
            metadata.append(Strict(False))  # JSON names an enum by its value ("inpaint")
        annotated = Annotated[base, *metadata] if metadata else base  # type: ignore[valid-type]
        fields[name] = (annotated | None, Field(default=None, description=info.description))
    return fields


class _JobBase(StrictBody):
    model_config = ConfigDict(extra="forbid", strict=True)

    image: str | None = Field(default=None, description="Input image: base64 or a data: URL.")
    mask: str | None = Field(default=None, description="Inpainting mask: white = change, or alpha 0 = change.")
    prompt_options: PromptOptionsIn | None = None


JobIn = create_model(  # type: ignore[call-overload]
    "JobIn", __base__=_JobBase, __doc__="A generation. Unset fields take the model's or bildwerk's defaults.",
    **_optional_request_fields())


def request_fields(body: BaseModel) -> dict[str, Any]:
    """The request fields a client set (images and prompt options apart)."""
    return body.model_dump(exclude={"image", "mask", "prompt_options"}, exclude_none=True)
