"""Styles as data: a name, a template with ``{prompt}``, and a negative prompt.

Shipped in ``data/styles/*.json`` (a list of ``{"name", "prompt", "negative_prompt"}``);
``$BILDWERK_HOME/styles/*.json`` adds styles or replaces shipped ones of the same name.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, Field, ValidationError, field_validator

from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.paths import data_files


class Style(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    prompt: str = "{prompt}"
    negative_prompt: str = ""

    @field_validator("prompt")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if v.count("{prompt}") != 1:
            raise ValueError("a style template must contain {prompt} exactly once")
        return v

    def apply(self, prompt: str, negative_prompt: str = "") -> tuple[str, str]:
        # str.replace, not str.format: user prompts may contain braces.
        styled = self.prompt.replace("{prompt}", prompt).strip(" ,")
        negative = ", ".join(p for p in (negative_prompt.strip(), self.negative_prompt.strip()) if p)
        return styled, negative


def load_styles() -> dict[str, Style]:
    """Every style by lower-case name; a broken file is an error naming the file."""
    styles: dict[str, Style] = {}
    for path in data_files("styles", "*.json"):
        try:
            items = json.loads(path.read_text("utf-8"))
            for item in items:
                style = Style(**item)
                styles[style.name.lower()] = style
        except (ValueError, TypeError, ValidationError) as exc:
            raise InvalidRequestError(f"style file {path} is broken: {exc}") from exc
    return styles


def get_style(name: str) -> Style:
    styles = load_styles()
    style = styles.get(name.strip().lower())
    if style is None:
        known = ", ".join(sorted(styles)) or "none installed"
        raise InvalidRequestError(f"unknown style {name!r}; known styles: {known}")
    return style
