"""One clean line from what a chat or vision model answered.

Every step that asks a model for a line of text (translation, expansion, paraphrase, the
describe-and-edit merge, remote image description) cleans the answer here, so they all
accept the same wrappers: reasoning blocks, lead-ins, labels, list markers, bold, quotes.

Conservative by design: only wrappers around the whole answer are removed, never words
inside it, so prompt syntax such as ``(word:1.2)`` or ``__wildcard__`` survives. An answer
that is nothing but a wrapper ("Translation:", ``""``) cleans to "", which callers treat
as no answer (and fall back or fail clearly).
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^\s*```")
# Reasoning models think aloud first; an unclosed block runs to the end of the answer.
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
# "Translation:", "English prompt:", "**Answer**:" ... labels models put before the answer.
_LABEL = re.compile(
    r"^(?:the\s+)?(?:(?:english|german|improved|expanded|enhanced|final|new|rewritten|"
    r"paraphrased|translated|image|your|merged|edited)\s+)*"
    r"(?:prompt|translation|answer|output|result|response|paraphrase|english|details|description|rewrite)\s*:\s*",
    re.IGNORECASE,
)
# "Sure! Here is the translation: ..." preambles on the answer's own line.
_PREAMBLE = re.compile(
    r"^(?:(?:sure|okay|ok|certainly)[,.!]?\s*)?(?:here\s+is|here's|here\s+are)\s+[^:]{0,60}:\s*",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^(?:#{1,6}\s+|[-*•]\s+|\d{1,2}[.)]\s+|>\s*)")
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "„": "“", "«": "»", "»": "«", "‘": "’", "`": "`"}
# Quote marks that never belong at the edge of a prompt on their own (apostrophes may:
# "the cats'").
_STRAY = frozenset('"“”„«»`')


def first_line(text: str) -> str:
    """The first line of an answer that carries content.

    Code fences are skipped, and so is a lead-in line ending in ":" ("Here is the
    translation:") when more lines follow it.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not _FENCE.match(ln)]
    for i, line in enumerate(lines):
        if line.endswith(":") and i + 1 < len(lines):
            continue
        return line
    return ""


def clean_answer(text: str) -> str:
    """One clean line from a model's answer: no reasoning, lead-in, label, list marker,
    bold or quotes; inner runs of whitespace collapsed."""
    line = first_line(_THINK.sub("", text))
    for _ in range(6):  # wrappers nest ("**Translation:** \"...\""): peel until stable
        before = line
        line = line.replace("**", "").strip()
        line = _BULLET.sub("", line)
        line = _PREAMBLE.sub("", line, count=1)
        line = _LABEL.sub("", line, count=1)
        line = _strip_wrapping(line).strip()
        if line == before:
            break
    return " ".join(line.split())


def _strip_wrapping(line: str) -> str:
    if len(line) >= 3 and line[-1] in ".!" and _QUOTE_PAIRS.get(line[0]) == line[-2]:
        unquoted = _strip_wrapping(line[:-1])  # '"a lake".' -> 'a lake'
        return unquoted if unquoted != line[:-1] else line
    if len(line) >= 2:
        close = _QUOTE_PAIRS.get(line[0])
        inner = line[1:-1]
        # Only a quote pair around the whole answer: '"red" car and "blue" bus' stays.
        if close is not None and line[-1] == close and close not in inner and line[0] not in inner:
            return inner
        if line[0] == line[-1] == "*" and "*" not in inner:
            return inner  # *italic answer*
    return _strip_stray_quote(line)


def _strip_stray_quote(line: str) -> str:
    """A quote mark at one edge whose partner never comes: the model's answer was cut
    ('"A red circle' from a two-line answer) or its quoting is unbalanced."""
    if line and line[0] in _STRAY and _QUOTE_PAIRS.get(line[0], line[0]) not in line[1:]:
        return line[1:]
    if line and line[-1] in _STRAY and not any(q in line[:-1] for q, c in _QUOTE_PAIRS.items() if c == line[-1]):
        return line[:-1]
    return line
