"""Translation to English for models that do not read the prompt's language (CLIP-based Stable
Diffusion reads English; a fine-tune also the languages of its captions).

Backends: ``llm`` (any OpenAI-compatible chat endpoint, or the embedded SmolLM2, which is
poor at it), ``lexicon`` (the curated per-language term lists: offline, word by word) and
``off``. bildwerk's own models read every language and skip this step. Weighting syntax
survives: each weighted segment is translated on its own and the weights are put back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bildwerk.core.errors import PromptBackendError
from bildwerk.core.weights import format_weighted, is_weighted, parse_weighted
from bildwerk.prompts.answer import check_answer, clean_answer
from bildwerk.prompts.lexicon import load_lexicon
from bildwerk.prompts.llm import ChatBackend

LANGUAGE_NAMES = {"de": "German", "fr": "French", "ko": "Korean", "ru": "Russian", "es": "Spanish",
                  "it": "Italian", "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "uk": "Ukrainian",
                  "ja": "Japanese", "zh": "Chinese", "tr": "Turkish", "en": "English"}

SYSTEM = ("You translate prompts for an image generator into English. Answer with the English "
          "translation only, on one line, without quotes or explanations. Keep names as they are.")


@dataclass
class TranslationResult:
    text: str
    backend: str
    untranslated: list[str] = field(default_factory=list)
    matched: list[tuple[str, str]] = field(default_factory=list)
    checks: dict = field(default_factory=dict)  # what the answer check measured (LLM answers)


def translate_lexicon(text: str, language: str) -> TranslationResult:
    lex = load_lexicon(language)
    if lex is None:
        raise PromptBackendError(
            f"there is no lexicon for language {language!r}; add $BILDWERK_HOME/lexicon/{language}.tsv "
            "or use an LLM for translation (--translate llm)")
    segments = parse_weighted(text)
    result = TranslationResult("", f"lexicon:{language}")
    parts: list[tuple[str, float]] = []
    for seg in segments:
        t = lex.translate(seg.text)
        result.untranslated.extend(t.untranslated)
        result.matched.extend(t.matched)
        if t.text:
            parts.append((t.text, seg.weight))
    if is_weighted(segments):
        result.text = format_weighted(parts)
    else:
        result.text = " ".join(p for p, _ in parts)
    return result


def translate_llm(text: str, language: str, llm: ChatBackend, *, seed: int | None = None) -> TranslationResult:
    name = LANGUAGE_NAMES.get(language, language)
    answer = clean_answer(llm.complete(SYSTEM, f"{name}: {text}", seed=seed, max_tokens=200, temperature=0.0))
    if not answer:
        raise PromptBackendError(f"the translation backend {llm.name} answered nothing for {text!r}")
    # An echo or a "translation" about something else is not used (PromptAnswerRejected).
    checks = check_answer(text, answer, kind="translate", backend=llm.name, source_language=language,
                          target_language="en")
    return TranslationResult(answer, llm.name, checks=checks)
