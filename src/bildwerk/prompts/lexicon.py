"""Per-language lexicons: the offline translation fallback and the museum's enhancement step.

Lexicons are data files (``data/lexicon/<lang>.tsv``: ``term<TAB>english``; and
``enhance.tsv``: ``english term<TAB>addition``) that curators edit without an engineer;
``$BILDWERK_HOME/lexicon/`` files of the same name add to and override them.

Matching ignores case and punctuation and prefers the longest term ("grüne wiese" before
"wiese"). Lexicon translation is word-by-word: it carries the important terms of a short
prompt ("ein See" -> "a lake") and reports every word it could not translate, so a
partial translation is never silent.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from bildwerk.core.paths import data_files

_WORD = re.compile(r"\w+", re.UNICODE)
# Endings tried when a word is not in the lexicon as written (plural, case, particles).
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "de": ("ern", "en", "er", "es", "em", "e", "n", "s"),
    "fr": ("es", "s", "x"),
    "es": ("es", "s"),
    "it": ("i", "e"),
    "ru": ("ами", "ями", "ов", "ев", "ей", "ом", "ем", "ой", "ей", "ам", "ах", "ы", "и", "а", "я", "у", "ю", "е"),
}
# Korean particles are not a suffix table: the analyser tells them apart (prompts/korean.py).


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: how lexicon terms and prompts are compared."""
    return _WORD.findall(text.lower())


def _read_tsv(kind_pattern: str) -> dict[tuple[str, ...], str]:
    table: dict[tuple[str, ...], str] = {}
    for path in data_files("lexicon", kind_pattern):
        for line in path.read_text("utf-8").splitlines():
            if not line.strip() or line.lstrip().startswith("#") or "\t" not in line:
                continue
            term, value = line.split("\t", 1)
            key = tuple(words(term))
            if key:
                table[key] = value.strip()  # later files (the user's) override
    return table


@dataclass
class Translation:
    text: str
    matched: list[tuple[str, str]] = field(default_factory=list)  # (source words, english)
    untranslated: list[str] = field(default_factory=list)


@dataclass
class Lexicon:
    language: str
    terms: dict[tuple[str, ...], str]

    @property
    def longest(self) -> int:
        return max((len(k) for k in self.terms), default=1)

    def lookup(self, word: str) -> str | None:
        """One word, as written or with a common ending removed."""
        if (word,) in self.terms:
            return self.terms[(word,)]
        return self.terms.get((self.base_form(word),))

    def base_form(self, word: str) -> str:
        """The word without its ending or particle when what is left is itself a known term
        ("Katzen" -> "katze"); otherwise the word as written. Korean goes through the
        morphological analyser instead, which knows a particle from a noun's last syllable
        ("고양이가" -> "고양이", "펭귄들이" -> "펭귄", "사과" stays), for unknown nouns too."""
        if self.language == "ko":
            from bildwerk.prompts.korean import strip_particles

            return strip_particles(word)
        for suffix in _SUFFIXES.get(self.language, ()):
            stem = word[: -len(suffix)]
            if word.endswith(suffix) and len(stem) >= 2 and (stem,) in self.terms:
                return stem
        return word

    def coverage(self, text: str) -> float:
        """Share of the text's words this lexicon knows (a language-detection signal)."""
        ws = words(text)
        return sum(self.lookup(w) is not None for w in ws) / len(ws) if ws else 0.0

    def translate(self, text: str) -> Translation:
        ws = words(text)
        out: list[str] = []
        result = Translation("")
        i = 0
        while i < len(ws):
            for n in range(min(self.longest, len(ws) - i), 1, -1):  # multi-word terms first
                key = tuple(ws[i : i + n])
                if key in self.terms:
                    result.matched.append((" ".join(key), self.terms[key]))
                    out.append(self.terms[key])
                    i += n
                    break
            else:
                english = self.lookup(ws[i])
                if english is None:
                    result.untranslated.append(ws[i])
                    out.append(ws[i])  # names and unknown words pass through, and are reported
                else:
                    result.matched.append((ws[i], english))
                    out.append(english)
                i += 1
        result.text = " ".join(w for w in out if w)
        return result


_cache: dict[str, Lexicon | dict] = {}
_lock = threading.Lock()


def load_lexicon(language: str) -> Lexicon | None:
    """The lexicon for an ISO 639-1 code, or None when there is none."""
    if not re.fullmatch(r"[a-z]{2,3}", language):
        return None
    with _lock:
        lex = _cache.get(language)
        if lex is None:
            terms = _read_tsv(f"{language}.tsv")
            lex = _cache[language] = Lexicon(language, terms)
    return lex if lex.terms else None  # type: ignore[union-attr]


def lexicon_languages() -> list[str]:
    names = {p.stem for p in data_files("lexicon", "*.tsv")} - {"enhance"}
    return sorted(n for n in names if load_lexicon(n) is not None)


def english_vocabulary() -> frozenset[str]:
    """Every English word the lexicons translate to (for telling English apart)."""
    with _lock:
        vocab = _cache.get("_english")
    if vocab is None:
        found: set[str] = set()
        for lang in lexicon_languages():
            lex = load_lexicon(lang)
            for value in lex.terms.values() if lex else ():
                found.update(words(value))
        for key in _enhancements():
            found.update(key)
        vocab = frozenset(found)
        with _lock:
            _cache["_english"] = vocab  # type: ignore[assignment]
    return vocab  # type: ignore[return-value]


def _enhancements() -> dict[tuple[str, ...], str]:
    with _lock:
        table = _cache.get("_enhance")
        if table is None:
            table = _cache["_enhance"] = _read_tsv("enhance.tsv")  # type: ignore[assignment]
    return table  # type: ignore[return-value]


def enhance(text: str, language: str | None = None) -> tuple[str, list[str]]:
    """Append each known term's addition once: "a lake" -> "a lake, calm blue lake, ...".

    Returns the new text and the terms that matched (longest first, no overlaps). The table
    is keyed in English; a prompt in another ``language`` (left untranslated for a model that
    reads it) is matched through that language's lexicon ("ein See" matches "lake") and keeps
    its own words, with the curated additions after them.
    """
    table = _enhancements()
    ws = words(text)
    if language not in (None, "en"):
        lex = load_lexicon(language)
        ws = words(lex.translate(text).text) if lex else []
    longest = max((len(k) for k in table), default=1)
    applied: list[str] = []
    additions: list[str] = []
    i = 0
    while i < len(ws):
        for n in range(min(longest, len(ws) - i), 0, -1):
            key = tuple(ws[i : i + n])
            if key in table:
                term = " ".join(key)
                if term not in applied:
                    applied.append(term)
                    additions.append(table[key])
                i += n
                break
        else:
            i += 1
    if not additions:
        return text, []
    return ", ".join([text.rstrip(" ,.;"), *additions]), applied


def clear_cache() -> None:
    """Forget loaded files (after a user edits them, and in tests)."""
    with _lock:
        _cache.clear()
