"""Describing an input image in words, and merging that description with an edit.

The design team's flow: an image plus an edit prompt ("make it a watercolor", "put the
cat on a beach") -> a description of the image -> one generation prompt that applies
the edit -> variations. This module covers the first two steps.

Three describers share one small interface, :class:`Describer`:

* :class:`LocalDescriber` (the default): offline, the efficientnet-lite0 ImageNet judge
  names the most likely of 1000 object classes. Cheap and private, but it sees objects
  only (no scene, style, colour, text, count or relation).
* :class:`OpenAIVisionDescriber`: a vision chat model (OpenAI or any compatible server)
  through the official ``openai`` SDK; writes a real sentence.
* :class:`AzureDescriber`: Azure Computer Vision v3.2 "describe", what the original
  project used.

:func:`describer` picks one from a spec string. :func:`merge_description` merges a
description and an edit by rule (deterministic, no model); :func:`merge_with_llm` asks a
chat model instead.
"""

from __future__ import annotations

from bildwerk.prompts.describe.azure import AzureDescriber
from bildwerk.prompts.describe.base import (
    DESCRIBER_CHOICES,
    MAX_SIDE,
    Describer,
    Description,
    ImageInput,
    describer,
)
from bildwerk.prompts.describe.local import LocalDescriber
from bildwerk.prompts.describe.merge import MERGE_SYSTEM, merge_description, merge_with_llm
from bildwerk.prompts.describe.openai_vision import (
    DEFAULT_VISION_MODEL,
    DESCRIBE_INSTRUCTION,
    OpenAIVisionDescriber,
)

__all__ = [
    "DEFAULT_VISION_MODEL",
    "DESCRIBER_CHOICES",
    "DESCRIBE_INSTRUCTION",
    "MAX_SIDE",
    "MERGE_SYSTEM",
    "AzureDescriber",
    "Describer",
    "Description",
    "ImageInput",
    "LocalDescriber",
    "OpenAIVisionDescriber",
    "describer",
    "merge_description",
    "merge_with_llm",
]
