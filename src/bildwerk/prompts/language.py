"""Which language a prompt is in, offline (lingua) and helped by bildwerk's lexicons.

Prompts are short, and statistics alone misjudge them ("ein See" looks English or Dutch
to lingua). So the candidate languages are limited to the ones a deployment expects
(``BILDWERK_LANGUAGES``, default en,de,fr,ko,ru,es,it), and lingua's confidence is
combined with how many of the words a language's lexicon knows. A caller that knows the
language (a German museum terminal) passes it as a hint and detection is skipped.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from bildwerk.prompts.lexicon import english_vocabulary, load_lexicon, words

DEFAULT_LANGUAGES = ("en", "de", "fr", "ko", "ru", "es", "it")
ENGLISH_PRIOR = 0.15
_detectors: dict[tuple[str, ...], object] = {}
_lock = threading.Lock()


@dataclass
class Detection:
    language: str | None  # ISO 639-1, None when nothing could be told (empty, digits only)
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    source: str = "lingua+lexicon"


def configured_languages() -> tuple[str, ...]:
    raw = os.environ.get("BILDWERK_LANGUAGES", "")
    codes = tuple(c.strip().lower() for c in raw.split(",") if c.strip())
    return codes or DEFAULT_LANGUAGES


def _detector(codes: tuple[str, ...]):
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    with _lock:
        if codes not in _detectors:
            langs = []
            for c in codes:
                try:
                    langs.append(Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())))
                except (AttributeError, ValueError):
                    continue  # a code lingua does not know is simply not a candidate
            if len(langs) < 2:
                langs = [Language.ENGLISH, Language.GERMAN]
            _detectors[codes] = LanguageDetectorBuilder.from_languages(*langs).build()
        return _detectors[codes]


def _lexicon_coverage(code: str, text: str) -> float:
    if code == "en":
        ws = words(text)
        vocab = english_vocabulary()
        return sum(w in vocab for w in ws) / len(ws) if ws else 0.0
    lex = load_lexicon(code)
    return lex.coverage(text) if lex else 0.0


def detect_language(text: str, *, hint: str | None = None,
                    languages: tuple[str, ...] | None = None) -> Detection:
    if hint:
        return Detection(hint.lower(), 1.0, {hint.lower(): 1.0}, source="hint")
    if not any(ch.isalpha() for ch in text):
        return Detection(None, 0.0, source="none")
    codes = languages or configured_languages()
    detector = _detector(tuple(codes))
    lingua = {v.language.iso_code_639_1.name.lower(): float(v.value)
              for v in detector.compute_language_confidence_values(text)}
    # Short texts: let the lexicons speak as loudly as the statistics.
    n = len(words(text))
    lex_weight = 0.5 if n <= 6 else 0.25
    scores = {c: (1 - lex_weight) * lingua.get(c, 0.0) + lex_weight * _lexicon_coverage(c, text)
              for c in codes}
    if "en" in scores and text.isascii():
        # Prompts are English far more often than not; a short ASCII prompt that looks a little
        # Italian ("fine", "cat") is English unless a lexicon or lingua says clearly otherwise.
        scores["en"] += ENGLISH_PRIOR
    best = max(scores, key=scores.__getitem__)
    return Detection(best, round(scores[best], 4), {k: round(v, 4) for k, v in scores.items()})
