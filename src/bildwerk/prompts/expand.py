"""Prompt expansion and paraphrase through a chat LLM, seeded.

Expansion adds visual detail *after* the user's prompt and never rewrites it, so the
subject cannot change (the LLM's words are appended, capped in length). Paraphrase asks
for the same meaning in other words, one variant per seed; variants feed keyword
extraction or separate generations.
"""

from __future__ import annotations

import re

from bildwerk.core.errors import PromptAnswerRejected, PromptBackendError
from bildwerk.prompts.answer import check_answer, clean_answer
from bildwerk.prompts.llm import ChatBackend

# This framing gave the embedded SmolLM2-135M its most usable answers (lists and few-shot
# examples made it copy the examples); larger LLMs follow it as well.
EXPAND_SYSTEM = "You describe pictures for an image generator: visible details only, short."
EXPAND_USER = "Describe this picture in one sentence with colours, lighting and style: {prompt}"
PARAPHRASE_SYSTEM = ("Rewrite the image prompt you are given in other words, in the same language, "
                     "keeping its meaning and subject. Answer with the rewritten prompt only, one line.")
MAX_ADDED_WORDS = 30


def tidy_addition(prompt: str, answer: str) -> str:
    """The new part of an answer: without the prompt repeated in front, stuttered words
    ("neon neon neon"), a cut-off tail, or more than ``MAX_ADDED_WORDS`` words."""
    text = " ".join(answer.split())
    if text.lower().startswith(prompt.lower()):
        text = text[len(prompt):]
    text = re.sub(r"^[\s,.;:]*(?:with\s+)?", "", text)
    words: list[str] = []
    for w in text.split():
        if not words or w.lower().strip(",.") != words[-1].lower().strip(",."):
            words.append(w)
    truncated = len(words) > MAX_ADDED_WORDS or text.endswith("-")
    text = " ".join(words[:MAX_ADDED_WORDS])
    if truncated and "," in text:
        text = text[: text.rfind(",")]  # end on a whole phrase, not half a word
    return text.strip(" ,.;:")


def expand(prompt: str, llm: ChatBackend, *, seed: int | None = None,
           language: str | None = None) -> tuple[str, str]:
    """(expanded prompt, the added text). An addition that drowns the subject is rejected
    (:class:`PromptAnswerRejected`)."""
    answer = clean_answer(llm.complete(EXPAND_SYSTEM, EXPAND_USER.format(prompt=prompt), seed=seed,
                                       max_tokens=60, temperature=0.5))
    added = tidy_addition(prompt, answer)
    if not added:
        raise PromptBackendError(f"the expansion backend {llm.name} answered nothing for {prompt!r}")
    expanded = f"{prompt.rstrip(' ,.;')}, {added}"
    check_answer(prompt, expanded, kind="expand", backend=llm.name, source_language=language)
    return expanded, added


def paraphrase(prompt: str, llm: ChatBackend, count: int, *, seed: int = 0, language: str | None = None,
               rejected: list[PromptAnswerRejected] | None = None) -> list[str]:
    """Up to ``count`` distinct rewordings (seed, seed+1, ...); the prompt itself excluded.

    Rewordings that lost the subject are left out and appended to ``rejected`` (the caller
    decides whether that is a warning or a failure); none left is a PromptBackendError.
    """
    out: list[str] = []
    for i in range(count * 2):  # small models repeat themselves: a few extra tries
        if len(out) >= count:
            break
        answer = clean_answer(llm.complete(PARAPHRASE_SYSTEM, prompt, seed=seed + i, max_tokens=80,
                                           temperature=0.9))
        if not answer or answer.lower() == prompt.lower() or answer in out:
            continue
        try:
            check_answer(prompt, answer, kind="paraphrase", backend=llm.name, source_language=language)
        except PromptAnswerRejected as exc:
            if rejected is not None:
                rejected.append(exc)
            continue
        out.append(answer)
    if not out:
        why = f": {'; '.join(str(e) for e in rejected)}" if rejected else ""
        raise PromptBackendError(f"the paraphrase backend {llm.name} gave no usable variant of {prompt!r}{why}")
    return out
