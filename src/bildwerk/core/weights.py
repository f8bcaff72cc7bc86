"""Prompt weighting in AUTOMATIC1111's syntax, parsed into (text, weight) segments.

``(word)`` multiplies the weight by 1.1, ``[word]`` divides it by 1.1, ``(word:1.3)``
multiplies it by 1.3; brackets nest and multiply. ``\\(`` and ``\\)`` (and the square
ones) are literal brackets. An opening bracket left unclosed applies to the rest of the
prompt, as in A1111, so existing prompts keep their meaning.

The segments are model-neutral: the engine turns them into conditioning with compel for
CLIP encoders and with a weighted phrase blend for the multilingual sentence encoder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UP = 1.1  # what one pair of round brackets multiplies by
_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]                      # an escaped bracket or backslash
    | \(                              # open round
    | \[                              # open square
    | :\s*(?P<w>[+-]?(?:\d+\.?\d*|\.\d+))\s*\)   # ':1.3)' closes a weighted group
    | \)                              # close round
    | \]                              # close square
    | [^\\()\[\]:]+                   # plain text
    | [:\\]                           # a lone colon or backslash is text
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Segment:
    text: str
    weight: float = 1.0


def parse_weighted(prompt: str) -> list[Segment]:
    """Split a prompt into segments of equal weight (adjacent equal weights merged)."""
    texts: list[str] = []
    weights: list[float] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for i in range(start, len(weights)):
            weights[i] *= factor

    for m in _TOKEN.finditer(prompt):
        tok = m.group(0)
        if tok.startswith("\\") and len(tok) == 2:
            texts.append(tok[1])
            weights.append(1.0)
        elif tok == "(":
            round_open.append(len(texts))
        elif tok == "[":
            square_open.append(len(texts))
        elif m.group("w") is not None:
            if round_open:
                scale(round_open.pop(), float(m.group("w")))
            else:  # ':1.3)' without an opening bracket is text
                texts.append(tok)
                weights.append(1.0)
        elif tok == ")":
            if round_open:
                scale(round_open.pop(), UP)
            else:
                texts.append(tok)
                weights.append(1.0)
        elif tok == "]":
            if square_open:
                scale(square_open.pop(), 1 / UP)
            else:
                texts.append(tok)
                weights.append(1.0)
        else:
            texts.append(tok)
            weights.append(1.0)
    for start in round_open:
        scale(start, UP)
    for start in square_open:
        scale(start, 1 / UP)

    merged: list[Segment] = []
    for text, weight in zip(texts, weights, strict=True):
        weight = round(weight, 6)
        if merged and merged[-1].weight == weight:
            merged[-1] = Segment(merged[-1].text + text, weight)
        else:
            merged.append(Segment(text, weight))
    return [s for s in merged if s.text]


def plain_text(prompt: str) -> str:
    """The prompt without weighting syntax (what a human would read)."""
    return re.sub(r"\s+", " ", "".join(s.text for s in parse_weighted(prompt))).strip()


def is_weighted(segments: list[Segment]) -> bool:
    return any(s.weight != 1.0 for s in segments)


def escape(text: str) -> str:
    """Make literal text safe inside a weighted prompt."""
    return re.sub(r"([\\()\[\]])", r"\\\1", text)


def format_weighted(pairs: list[tuple[str, float]] | list[Segment]) -> str:
    """Segments back to A1111 syntax: ``(lake:1.32), city`` (weight 1 stays bare)."""
    out = []
    for item in pairs:
        text, weight = (item.text, item.weight) if isinstance(item, Segment) else item
        text = escape(text.strip())
        if not text:
            continue
        out.append(text if abs(weight - 1.0) < 5e-3 else f"({text}:{weight:.2f})")
    return ", ".join(out)
