"""Korean morphology through Kiwi (``kiwipiepy`` + ``kiwipiepy-model``, offline, in the wheel).

The Korean team's keyword step removes particles and keeps stems (their step 3, done with
KoNLPy). A suffix table cannot do that for nouns it does not know ("펭귄들이" keeps its
"이"), so everything Korean that needs word forms asks the analyser here: keyword
candidates (nouns, and verbs and adjectives in their dictionary form, as KoNLPy's
``stem=True`` gives them) and the bare noun of a word with particles.

The analyser is loaded once, on first use (about a second). Kiwi's extra dictionaries
(typo correction, multi-word entries, the default user dictionary) are left out: they
triple the load time and changed none of the prompt words we tried; the model's own
vocabulary carries the nouns.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

BACKEND = "kiwi"
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
# Kiwi's tags (Sejong tag set): common/proper nouns, roots, foreign words; verbs and adjectives.
_NOUNS = ("NNG", "NNP", "XR", "SL")
_PREDICATES = ("VV", "VA")
_kiwi: Any = None
_lock = threading.Lock()


def has_hangul(text: str) -> bool:
    return _HANGUL.search(text) is not None


def tokenize(text: str) -> list[Any]:
    """Kiwi's tokens of a text; the one analyser of the process, loaded on first use and
    used by one thread at a time (its thread safety is not documented)."""
    global _kiwi
    with _lock:
        if _kiwi is None:
            from kiwipiepy import Kiwi

            _kiwi = Kiwi(num_workers=-1, load_default_dict=False, load_typo_dict=False,
                         load_multi_dict=False)
        return list(_kiwi.tokenize(text))


def _tag(token: Any) -> str:
    return token.tag.split("-")[0]  # "VA-I" (irregular) is an adjective too


def content_words(text: str) -> list[str]:
    """Nouns, and verbs and adjectives in their dictionary form, in order: particles,
    endings and suffixes removed ("바닷가에서 노는 귀여운 고양이가" -> 바닷가 놀다 귀엽다 고양이)."""
    if not has_hangul(text):
        return text.split()
    out: list[str] = []
    for tok in tokenize(text):
        tag = _tag(tok)
        if tag in _NOUNS:
            out.append(tok.form)
        elif tag in _PREDICATES:
            out.append(getattr(tok, "lemma", None) or f"{tok.form}다")
    return out


@lru_cache(maxsize=4096)
def strip_particles(word: str) -> str:
    """A word without its particles and plural suffix when it is one noun with them
    ("펭귄들이" -> "펭귄", "바닷가에서" -> "바닷가"); anything else as written."""
    if not has_hangul(word):
        return word
    tokens = tokenize(word)
    if not tokens or _tag(tokens[0]) not in ("NNG", "NNP"):
        return word
    rest = tokens[1:]
    if all(t.tag.startswith("J") or (t.tag == "XSN" and t.form == "들") for t in rest):
        return tokens[0].form
    return word
