"""Text helpers shared by the describers and the merge: whitespace, clipping, redaction,
and cleaning a model's answer down to one line."""

from __future__ import annotations

import re

from bildwerk.openai_errors import one_line, redact


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int = 300) -> str:
    return one_line(text, limit)


def _redact(text: str, secret: str | None) -> str:
    return redact(text, [secret])


_PREFIX = re.compile(
    r"^(?:(?:here\s+is|here's)\s+(?:the|a|your)\s+(?:merged\s+|new\s+|edited\s+)?prompt\s*:?|"
    r"(?:merged\s+|new\s+|edited\s+|final\s+)?prompt\s*:|answer\s*:|output\s*:)\s*",
    re.IGNORECASE,
)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
_WRAP = "\"'`*“”‘’«»"


def _clean_line(text: str) -> str:
    """The first meaningful line of a model's answer, without labels, quotes or markdown."""
    text = _THINK.sub("", text)
    for line in text.splitlines():
        line = line.strip().lstrip("-•>#").strip()
        line = _PREFIX.sub("", line).strip()
        line = line.strip(_WRAP).strip()
        if line and not line.endswith(":"):
            return _one_line(line)
    return ""
