"""Text helpers shared by the describers and the merge: whitespace, clipping, redaction.
(Cleaning a model's answer lives in :mod:`bildwerk.prompts.answer`.)"""

from __future__ import annotations

from bildwerk.core.openai_errors import one_line, redact


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int = 300) -> str:
    return one_line(text, limit)


def _redact(text: str, secret: str | None) -> str:
    return redact(text, [secret])
