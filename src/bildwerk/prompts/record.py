"""The record of what the prompt pipeline did: every step's input, output, backend and time.

It travels on the ``GenerationRequest`` (``prompt_record``), so the PNG metadata, the
history store and every API answer can say how "ein See" became the model's prompt.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PromptStep(BaseModel):
    """One step of the pipeline, as it ran."""

    step: str = Field(description="language, wildcards, translate, describe, merge, lexicon, "
                                  "keywords, paraphrase, expand, style")
    input: str
    output: str
    backend: str | None = None
    seconds: float = 0.0
    details: dict[str, Any] = Field(default_factory=dict)


class PromptRecord(BaseModel):
    """The user's text, each step, and the prompt the model finally received."""

    original: str
    original_negative: str = ""
    language: str | None = Field(default=None, description="ISO 639-1 code of the user's text.")
    template: str | None = Field(default=None, description="The wildcard template, when one was used.")
    steps: list[PromptStep] = Field(default_factory=list)
    prompt: str = ""
    negative_prompt: str = ""
    variants: list[str] = Field(default_factory=list, description="Paraphrases, when asked for.")
    warnings: list[str] = Field(default_factory=list)

    def step(self, name: str) -> PromptStep | None:
        """The first step called ``name``, or None when it did not run."""
        return next((s for s in self.steps if s.step == name), None)
