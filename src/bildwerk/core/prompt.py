"""The prompt vocabulary: what to do to a prompt (``PromptOptions``) and what was done
(``PromptRecord``: every step's input, output, backend and time).

The record travels on the ``GenerationRequest`` (``prompt_record``), so the PNG metadata, the
history store and every API answer can say how "ein See" became the model's prompt. The
options travel on the job spec, so every face asks for prompt steps in the same words.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bildwerk.core.bounds import MAX_NAME_CHARS, MAX_PROMPT_CHARS, MAX_SEED
from bildwerk.core.loras import LoraSpec
from bildwerk.core.text import check_text


class PromptStep(BaseModel):
    """One step of the pipeline, as it ran."""

    step: str = Field(description="loras, wildcards, embeddings, language, translate, describe, merge, "
                                  "lexicon, keywords, paraphrase, expand, style")
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
    loras: list[LoraSpec] = Field(default_factory=list,
                                  description="LoRAs named by <lora:...> tags in the prompt or its style.")
    embeddings: list[str] = Field(default_factory=list,
                                  description="Textual-inversion embeddings the prompt names.")

    def step(self, name: str) -> PromptStep | None:
        """The first step called ``name``, or None when it did not run."""
        return next((s for s in self.steps if s.step == name), None)


TranslateMode = Literal["auto", "llm", "lexicon", "off"]
# Two orders, not any permutation of step names: the other steps depend on each other in one
# way only (wildcards before everything, style last), and what users differ on is whether
# rewordings are made before or after translation (the Korean team paraphrases first).
StepOrder = Literal["translate-first", "paraphrase-first"]


class PromptOptions(BaseModel):
    """What to do to a prompt; everything off except wildcards and automatic translation."""

    model_config = ConfigDict(extra="forbid")

    language: str | None = Field(default=None, max_length=MAX_NAME_CHARS,
                                 description="The prompt's language (ISO 639-1); detected when unset.")
    translate: TranslateMode = Field(
        default="auto",
        description="auto: translate to English only when the model does not read the prompt's "
        "language (LLM when one is configured, else the lexicon); llm / lexicon: always for non-English text; off.")
    enhance: bool = Field(default=False, description="Add the lexicon's details to known terms.")
    style: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    wildcards: bool = True
    keywords: bool = False
    keyword_mode: Literal["append", "replace"] = "append"
    keyword_backend: Literal["use", "minilm"] = "use"
    keyword_count: int = Field(default=5, ge=1, le=20)
    paraphrase: int = Field(default=0, ge=0, le=8, description="How many rewordings to make.")
    order: StepOrder = Field(
        default="translate-first",
        description="translate-first: translate, then reword the translation; paraphrase-first: "
                    "reword in the prompt's own language, then translate the prompt and each rewording.")
    expand: bool = False
    describe: str | None = Field(default=None, max_length=MAX_NAME_CHARS,
                                 description="Describer for the input image: local, openai, azure.")
    description: str | None = Field(
        default=None, max_length=MAX_PROMPT_CHARS,
        description="The input image's description as the user wrote or corrected it (e.g. after "
                    "POST /api/v1/prompt showed the describer's): used instead of a describer, then merged.")
    merge: Literal["rules", "llm"] = "rules"
    llm: str | None = Field(default=None, max_length=MAX_NAME_CHARS,
                            description="Chat backend: local, openai, openai:MODEL.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    fallback: bool = True

    @field_validator("language", "style", "describe", "llm", "description")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return v if v is None else check_text(v)

    @classmethod
    def verbatim(cls) -> PromptOptions:
        """Options that give the model the prompt exactly as written (no wildcards, no
        translation): evaluation and training previews, whose captions are already final."""
        return cls(wildcards=False, translate="off")
