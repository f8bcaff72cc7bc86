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


# --------------------------------------------------------------------------- judging answers
# Small models answer fluently and wrongly: SmolLM2-135M made "The legendary king of the
# sea." of "a cat by the sea" and "translated" German by echoing it. Every step that takes a
# model's line (translation, paraphrase, expansion) asks :func:`judge_answer` before using it.
#
# The subject check is the cross-lingual cosine of USE-multilingual (the default model's text
# encoder) between the input and the answer. Measured on it: good translations and rewordings
# 0.57-0.80, the nonsense above 0.43 (English input) and 0.11 (Korean input), a vaguer
# "a beautiful landscape" for "ein See zwischen Hochhäusern" 0.26. An expansion repeats the
# prompt, so only an addition that swamps it falls below its lower bar.
SUBJECT_SIMILARITY = {"translate": 0.45, "paraphrase": 0.45, "expand": 0.4, "merge": 0.45}
# A same-language answer that keeps none of the input's content words must be this close.
_REWORDED_SIMILARITY = 0.6


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def similarity(a: str, b: str) -> float:
    """Cosine of the multilingual sentence encoder between two texts (-1..1)."""
    import numpy as np

    from bildwerk.models.sentence_encoder import SentenceEncoder

    va, vb = SentenceEncoder().embed_texts([a, b])
    norm = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb) / norm if norm else 0.0


def content_words(text: str, language: str | None) -> set[str]:
    """The words that carry meaning: Korean through the analyser, others without their
    stop words (scikit-learn's English list, the lexicon's function words elsewhere)."""
    if language == "ko":
        from bildwerk.prompts.korean import content_words as korean

        return set(korean(text))
    from bildwerk.prompts.keywords import stop_words
    from bildwerk.prompts.lexicon import words

    stops = stop_words(language or "en")
    if stops == "english":
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS as stops
    return {w.rstrip("s") for w in words(text) if w not in (stops or ()) and not w.isdigit()}


def judge_answer(source: str, answer: str, *, kind: str, source_language: str | None = None,
                 target_language: str | None = None) -> tuple[str | None, dict]:
    """Why a model's answer is unusable (None when it is usable), and what was measured.

    ``kind`` is translate, paraphrase, expand or merge (the source then is the description and
    the edit together). A translation that equals its input or is
    still detected as the input's language is an echo; any answer whose similarity to the
    input is below ``SUBJECT_SIMILARITY[kind]`` lost the subject, and so did a same-language
    answer that keeps none of the input's content words unless it is close in meaning.
    """
    checks: dict = {}
    if kind == "translate" and source_language not in (None, target_language):
        if _normalised(answer) == _normalised(source):
            return "echoed the input instead of translating it", checks
        from bildwerk.core.weights import plain_text
        from bildwerk.prompts.language import detect_language

        found = detect_language(plain_text(answer)).language
        checks["answer_language"] = found
        if found == source_language:
            return f"is still in the input's language ({found}), not translated", checks
    sim = similarity(source, answer)
    checks["similarity"] = round(sim, 3)
    bar = SUBJECT_SIMILARITY[kind]
    if sim < bar:
        return f"lost the prompt's subject (similarity {sim:.2f} to the input, below {bar})", checks
    if kind == "paraphrase" and sim < _REWORDED_SIMILARITY:
        kept = content_words(source, source_language) & content_words(answer, source_language)
        checks["kept_words"] = sorted(kept)
        if not kept:
            return (f"kept none of the prompt's words and is only loosely related (similarity "
                    f"{sim:.2f})"), checks
    return None, checks


def check_answer(source: str, answer: str, *, kind: str, backend: str, source_language: str | None = None,
                 target_language: str | None = None) -> dict:
    """:func:`judge_answer`, raising :class:`PromptAnswerRejected` for an unusable answer;
    returns what was measured (for the step's details)."""
    from bildwerk.core.errors import PromptAnswerRejected

    reason, checks = judge_answer(source, answer, kind=kind, source_language=source_language,
                                  target_language=target_language)
    if reason:
        raise PromptAnswerRejected(f"{backend}'s {kind} {answer!r} {reason}", answer=answer, reason=reason,
                                   checks=checks)
    return checks
