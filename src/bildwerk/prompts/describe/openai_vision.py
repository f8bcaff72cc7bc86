"""A describer backed by a vision chat model (OpenAI or any compatible server)."""

from __future__ import annotations

import base64
import os
from typing import Any

from bildwerk.core.errors import PromptBackendError
from bildwerk.core.openai_errors import explain
from bildwerk.images.io import encode_png
from bildwerk.prompts.answer import clean_answer
from bildwerk.prompts.describe.base import Description, ImageInput, _as_image, _fit

DEFAULT_VISION_MODEL = "gpt-4o-mini"
DESCRIBE_INSTRUCTION = (
    "Describe this image in one sentence for an image generator: subject, setting, style."
)


class OpenAIVisionDescriber:
    """A one-sentence caption from a vision chat model through the official ``openai`` SDK.

    Settings not given come from the environment: ``BILDWERK_VISION_MODEL`` (default
    ``gpt-4o-mini``), ``BILDWERK_LLM_BASE_URL`` (default: api.openai.com) and the key
    from ``BILDWERK_LLM_API_KEY``, then ``OPENAI_API_KEY``. A base URL without a key is
    fine (local OpenAI-compatible servers). The image goes as a PNG data URL, long side
    at most :data:`MAX_SIDE` pixels, transparency flattened onto white.
    """

    def __init__(self, model: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, timeout: float = 60, max_retries: int = 2) -> None:
        self.model = model or os.environ.get("BILDWERK_VISION_MODEL") or DEFAULT_VISION_MODEL
        base_url = base_url or os.environ.get("BILDWERK_LLM_BASE_URL") or None
        key = api_key or os.environ.get("BILDWERK_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not key and not base_url:
            raise PromptBackendError(
                "the OpenAI describer needs an API key: set BILDWERK_LLM_API_KEY or "
                "OPENAI_API_KEY, or point BILDWERK_LLM_BASE_URL at an OpenAI-compatible server"
            )
        import openai

        self._key = key
        # Local servers ignore the key, but the SDK refuses to build a client without one.
        self._client = openai.OpenAI(api_key=key or "not-needed", base_url=base_url,
                                     timeout=timeout, max_retries=max_retries)
        self.endpoint = str(self._client.base_url).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.name = f"openai:{self.model}"

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIVisionDescriber(model={self.model!r}, endpoint={self.endpoint!r})"

    def describe(self, image: ImageInput) -> Description:
        import openai

        png = encode_png(_fit(_as_image(image)))
        url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        messages: Any = [{
            "role": "user",
            "content": [
                {"type": "text", "text": DESCRIBE_INSTRUCTION},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }]
        where = f"{self.endpoint} (model {self.model})"
        try:
            reply = self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=150, temperature=0.2
            )
        except openai.OpenAIError as exc:
            failure = explain(exc, where=f"the vision model at {where}", secrets=[self._key],
                              timeout=self.timeout, retries=self.max_retries,
                              key_hint="BILDWERK_LLM_API_KEY or OPENAI_API_KEY")
            raise PromptBackendError(failure.message) from exc
        choices = getattr(reply, "choices", None) or []
        content = choices[0].message.content if choices and choices[0].message else None
        text = clean_answer(content or "")
        if not text:
            raise PromptBackendError(f"the vision model at {where} answered with an empty caption")
        return Description(text=text, backend=self.name, confidence=None, labels=[])
