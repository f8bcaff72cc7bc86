"""LoRAs a request asks for: the ``loras`` field and A1111's prompt tags, in one vocabulary.

A1111 (and ComfyUI's prompt-control, Fooocus, InvokeAI's importers) write LoRAs into the prompt:
``<lora:NAME:0.8>``, ``<lora:NAME>`` (weight 1), ``<lyco:NAME:0.5>`` (LyCORIS files, same loader).
The tags are taken out of the prompt before the prompt steps see it (a translator must not
mangle a file name, and the text encoder must not read ``<lora...>`` as words) and merged with the
request's ``loras`` field. Rules when a name comes twice (names compare case-insensitively, as
A1111's lookup does): among tags the last one wins; the field wins over any tag (an API client
setting a weight explicitly means that weight). Nothing here touches files: names are looked up
by models/assets.py, never joined onto a path.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bildwerk.core.bounds import MAX_NAME_CHARS
from bildwerk.core.errors import InvalidRequestError

MAX_LORAS = 8  # per request: each one adds work to every UNet call
MIN_LORA_WEIGHT, MAX_LORA_WEIGHT = -4.0, 4.0

# <lora:name>, <lora:name:0.8>, <lyco:name:0.8>; A1111 also allows extra ":te:unet" numbers
# (per-part weights), of which the first (the text encoder's and, alone, both) is taken.
_TAG = re.compile(r"<\s*(lora|lyco)\s*:\s*([^:<>]+?)\s*(?::\s*([^<>]*?)\s*)?>", re.IGNORECASE)


class LoraSpec(BaseModel):
    """One LoRA by name and the weight it is applied with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS,
                      description="The LoRA's name: its file name without .safetensors.")
    weight: float = Field(default=1.0, ge=MIN_LORA_WEIGHT, le=MAX_LORA_WEIGHT)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        v = v.strip()
        if not v or any(c in v for c in "<>\x00") or any(ord(c) < 32 for c in v):
            raise ValueError("a LoRA name is a file name without .safetensors (no <, > or control characters)")
        return v

    def tag(self) -> str:
        """The A1111 prompt tag for it (what the infotext keeps)."""
        return f"<lora:{self.name}:{self.weight:g}>"


class LoraTagError(InvalidRequestError):
    """A LoRA tag or set a request cannot use (a 400 on every face)."""


def extract_lora_tags(text: str) -> tuple[str, list[LoraSpec]]:
    """``text`` without its LoRA tags, and the tags as specs in order of appearance.
    Raises ``LoraTagError`` for a tag whose weight is no number or out of bounds."""
    found: list[LoraSpec] = []

    def take(m: re.Match[str]) -> str:
        name, raw = m[2], (m[3] or "").split(":")[0].strip()
        try:
            weight = float(raw) if raw else 1.0
        except ValueError:
            raise LoraTagError(f"LoRA tag {m[0]!r}: the weight must be a number, like <lora:{name}:0.8>") from None
        if not MIN_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT:
            raise LoraTagError(f"LoRA tag {m[0]!r}: the weight must be between {MIN_LORA_WEIGHT:g} and "
                               f"{MAX_LORA_WEIGHT:g}")
        try:
            found.append(LoraSpec(name=name, weight=weight))
        except ValueError as exc:
            raise LoraTagError(f"LoRA tag {m[0]!r}: {exc}") from None
        return " "

    stripped = _TAG.sub(take, text)
    if not found:
        return text, []
    # Tidy what the tags leave behind: doubled spaces and commas, a trailing comma.
    stripped = re.sub(r"\s+,", ",", re.sub(r"[ \t]{2,}", " ", stripped))
    stripped = re.sub(r",(\s*,)+", ",", stripped).strip(" ,\t")
    return stripped, found


def has_lora_tags(text: str) -> bool:
    return _TAG.search(text) is not None


def merge_loras(field: list[LoraSpec], tags: list[LoraSpec]) -> tuple[list[LoraSpec], list[str]]:
    """The LoRAs to apply: the tags (last of a name wins), then the field over them. Returns them
    in first-mention order with notes on what was overridden."""
    notes: list[str] = []
    merged: dict[str, LoraSpec] = {}
    for spec in tags:
        key = spec.name.casefold()
        if key in merged and merged[key].weight != spec.weight:
            notes.append(f"LoRA {spec.name!r} is in the prompt twice; used the last weight {spec.weight:g}")
        merged[key] = spec if key not in merged else merged[key].model_copy(update={"weight": spec.weight})
    for spec in field:
        key = spec.name.casefold()
        if key in merged and merged[key].weight != spec.weight:
            notes.append(f"LoRA {spec.name!r}: the loras field's weight {spec.weight:g} replaces the prompt "
                         f"tag's {merged[key].weight:g}")
        merged[key] = spec
    if len(merged) > MAX_LORAS:
        raise LoraTagError(f"at most {MAX_LORAS} LoRAs per request (got {len(merged)})")
    return list(merged.values()), notes
