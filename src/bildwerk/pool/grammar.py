"""The offline planner's template grammar: places, items and prompts from data files.

``data/pool/grammar/topics/*.yaml`` lists places (interiors, exteriors) and items for common
stock topics with their names in several languages; a topic is picked by keywords in any of
them ("Медицина и здоровье" picks medicine). An unknown topic still gets sensible places from
``generic.yaml`` ("beekeeping workshop"). Prompts combine a place with attribute values from
``attributes.yaml`` (style, lighting and time of day, viewpoint, people, ...): every axis runs
through all its values in a shuffled order before one repeats, so the prompts of a place
differ by design, and the same seed always gives the same prompts.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from bildwerk.core.bounds import MAX_NAME_CHARS
from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.paths import data_files

DATA_LANGUAGES = ("en", "de", "fr", "ru", "ko")
_KNOWN_KINDS = ("interiors", "exteriors", "items")
# A stream of attribute combinations gives up after this many repeats in a row: the axes
# have fewer combinations than were asked for.
_MAX_REPEATS = 200


# --------------------------------------------------------------------------- words

def fold(text: str) -> str:
    """Lower case without accents, so "Médecine" and "medecine", "ё" and "е" compare equal."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").casefold()


def words_of(text: str) -> list[str]:
    return re.findall(r"\w+", fold(text))


def keyword_hits(keyword: str, words: list[str]) -> bool:
    """A keyword matches a word it begins ("medic" ~ "medical"); "=it" only the word "it";
    several words ("real estate") match consecutive words, the last one by its beginning."""
    return bool(_hit_words(keyword, words))


def _hit_words(keyword: str, words: list[str]) -> set[int]:
    """The positions of the words a keyword matches (see :func:`keyword_hits`)."""
    exact = keyword.startswith("=")
    parts = words_of(keyword[1:] if exact else keyword)
    hits: set[int] = set()
    if not parts:
        return hits
    for i in range(len(words) - len(parts) + 1):
        head, last = words[i:i + len(parts) - 1], words[i + len(parts) - 1]
        if head == parts[:-1] and (last == parts[-1] if exact else last.startswith(parts[-1])):
            hits.update(range(i, i + len(parts)))
    return hits


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Term:
    """A word or phrase in English with its translations, plus attributes it implies."""

    en: str
    names: Mapping[str, str] = field(default_factory=dict)
    also: Mapping[str, str] = field(default_factory=dict)
    details: tuple[Term, ...] = ()

    def text(self, language: str) -> str | None:
        return self.en if language == "en" else self.names.get(language)

    @classmethod
    def of(cls, raw: Any, where: str) -> Term:
        if isinstance(raw, str):
            return cls(en=raw.strip())
        if not isinstance(raw, dict) or not isinstance(raw.get("en"), str) or not raw["en"].strip():
            raise InvalidRequestError(f"{where}: every entry needs an English text (en: ...); got {raw!r}")
        names = {k: str(v).strip() for k, v in raw.items() if k not in ("en", "also", "details") and v}
        also = {str(k): str(v) for k, v in (raw.get("also") or {}).items()}
        details = tuple(cls.of(d, where) for d in raw.get("details") or ())
        return cls(en=raw["en"].strip(), names=names, also=also, details=details)


@dataclass(frozen=True)
class KindSpec:
    """How prompts of one kind are built: the order of their parts and each axis's values."""

    order: tuple[str, ...]
    axes: Mapping[str, tuple[Term, ...]]
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topic:
    key: str
    name: str
    keywords: Mapping[str, tuple[str, ...]]
    places: Mapping[str, tuple[Term, ...]]


def _yaml(path: Path) -> Any:
    return _yaml_cached(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _yaml_cached(path: str, _mtime: int) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InvalidRequestError(f"the pool grammar file {path} is broken: {str(e).splitlines()[0]}") from None


def _last(kind: str, name: str) -> Any:
    """The data file ``name`` of ``kind``: the user's copy when there is one."""
    files = data_files(kind, name)
    if not files:
        raise InvalidRequestError(f"the pool grammar file {kind}/{name} is missing from the installation")
    return _yaml(files[-1])


def kind_specs() -> dict[str, KindSpec]:
    data = _last("pool/grammar", "attributes.yaml")
    specs = {}
    for name, raw in (data.get("kinds") or {}).items():
        where = f"attributes.yaml: kind {name}"
        axes = {a: tuple(Term.of(v, where) for v in vals) for a, vals in (raw.get("axes") or {}).items() if vals}
        specs[name] = KindSpec(order=tuple(raw.get("order") or ("location", *axes)), axes=axes,
                               aliases=tuple(raw.get("aliases") or ()))
    if "default" not in specs:
        raise InvalidRequestError("attributes.yaml needs a 'default' kind for kinds it does not name")
    return specs


def spec_name(kind: str, specs: Mapping[str, KindSpec]) -> str:
    """Which spec serves a kind of the mix: its own, one it is an alias of, or the default."""
    key = fold(kind).strip()
    for name, spec in specs.items():
        if key == fold(name) or key in (fold(a) for a in spec.aliases):
            return name
    return "default"


def topics() -> list[Topic]:
    by_key: dict[str, Path] = {}
    for path in data_files("pool/grammar/topics", "*.yaml"):
        by_key[path.stem] = path  # the user's file of the same name replaces the shipped one
    out = []
    for key, path in sorted(by_key.items()):
        raw = _yaml(path) or {}
        where = f"topic file {path}"
        keywords = {lang: tuple(str(k) for k in kws or ()) for lang, kws in (raw.get("keywords") or {}).items()}
        places = {k: tuple(Term.of(v, where) for v in raw.get(k) or ()) for k in raw
                  if k not in ("name", "keywords") and isinstance(raw.get(k), list)}
        out.append(Topic(key=key, name=str(raw.get("name") or key), keywords=keywords, places=places))
    return out


def generic() -> dict[str, Any]:
    return _last("pool/grammar", "generic.yaml")


# --------------------------------------------------------------------------- topics

@dataclass(frozen=True)
class TopicMatch:
    topic: Topic | None
    hits: tuple[str, ...] = ()
    languages: Mapping[str, int] = field(default_factory=dict)

    @property
    def language(self) -> str | None:
        """The language the matched keywords are in; ties go to English, then data order."""
        if not self.languages:
            return None
        best = max(self.languages.values())
        tied = [lang for lang in ("en", *DATA_LANGUAGES) if self.languages.get(lang) == best]
        return tied[0] if tied else max(self.languages, key=self.languages.__getitem__)


# Words that tell a topic's language when its keywords are shared ("Sport und Fitness").
_FUNCTION_WORDS = {"en": ("and", "of", "the", "for"), "de": ("und", "der", "die", "das", "für", "im"),
                   "fr": ("et", "le", "la", "les", "des", "du", "pour"), "ru": ("и", "для", "в")}


def match_topic(text: str, candidates: list[Topic] | None = None) -> TopicMatch:
    """The topic whose keywords match the most words of ``text`` (None when none does; a tie
    goes to the first topic file by name)."""
    words = words_of(text)
    best, best_words = TopicMatch(None), 0
    for topic in candidates if candidates is not None else topics():
        hits, languages, matched = [], {}, set()
        for lang, keywords in topic.keywords.items():
            for kw in keywords:
                if found := _hit_words(kw, words):
                    matched |= found
                    hits.append(kw)
                    languages[lang] = languages.get(lang, 0) + 1
        if len(matched) > best_words:
            best, best_words = TopicMatch(topic, tuple(dict.fromkeys(hits)), languages), len(matched)
    languages = dict(best.languages)
    for lang, function_words in _FUNCTION_WORDS.items():
        n = sum(w in function_words for w in words)
        if n:
            languages[lang] = languages.get(lang, 0) + n
    return TopicMatch(best.topic, best.hits, languages)


# --------------------------------------------------------------------------- the grammar

@dataclass(frozen=True)
class Spot:
    """A location (or item) as a plan holds it: its name in the plan's language, in English,
    whether the name really is in that language, and details its prompts may show."""

    name: str
    english: str
    translated: bool = True
    details: tuple[Term, ...] = ()

    def __post_init__(self) -> None:
        # A long topic inside a place pattern ("{topic} office") can outgrow a plan's name bound.
        object.__setattr__(self, "name", clip_name(self.name))
        object.__setattr__(self, "english", clip_name(self.english))


def clip_name(text: str, limit: int = MAX_NAME_CHARS) -> str:
    """``text`` cut to ``limit`` characters at a word boundary where there is one."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return (cut.rsplit(" ", 1)[0] if " " in cut[limit // 2:] else cut).rstrip(" ,-")


@dataclass
class Draft:
    """A prompt before it has seeds: what goes to the model, in the plan's language, why."""

    prompt: str
    original: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    source: str = "grammar"


class Grammar:
    """Places and prompts for one topic in one language, all from data, deterministic per seed."""

    def __init__(self, topic: str, language: str, *, match: TopicMatch | None = None,
                 topic_english: str | None = None) -> None:
        self.topic_text = topic.strip()
        self.language = language.split("-")[0].lower()
        self.match = match if match is not None else match_topic(topic)
        self.topic_english = (topic_english or self.topic_text).strip()
        self.specs = kind_specs()
        self._generic = generic()

    @property
    def topic_key(self) -> str | None:
        return self.match.topic.key if self.match.topic else None

    def spec(self, kind: str) -> KindSpec:
        return self.specs[spec_name(kind, self.specs)]

    # ---------------------------------------------------------------- locations

    def locations(self, kind: str, count: int, *, seed: int,
                  exclude: set[str] | frozenset[str] = frozenset()) -> list[Spot]:
        """``count`` distinct places or items of ``kind`` (fewer only when the data runs out):
        the topic's own in a seeded order, then qualified variants, then generic ones."""
        rng = random.Random(f"bildwerk-pool:{seed}:locations:{kind}")
        taken = {fold(x) for x in exclude}
        out: list[Spot] = []
        for spot in self._candidates(kind, rng):
            if len(out) >= count:
                break
            if fold(spot.name) in taken or fold(spot.english) in taken:
                continue
            taken.update((fold(spot.name), fold(spot.english)))
            out.append(spot)
        return out

    def _candidates(self, kind: str, rng: random.Random) -> Iterator[Spot]:
        name = spec_name(kind, self.specs)
        topic = self.match.topic
        own: list[Term] = []
        if topic is not None:  # a list under the kind's own name, else under the spec it uses
            own = list(topic.places.get(kind) or (topic.places.get(name) if name != "default" else ()) or ())
        rng.shuffle(own)
        places = self._generic.get("places") or {}
        generic = [self._named(Term.of(t, "generic.yaml: places"), kind if name == "default" else None)
                   for t in (places.get(name) or places.get("default") or ())]
        rng.shuffle(generic)
        if name == "default":  # a kind the data does not know ("vehicles"): its own word first
            generic.insert(0, self._named(Term(en=kind, names={lang: kind for lang in DATA_LANGUAGES}), None))
        qualifiers = [Term.of(q, "generic.yaml: qualifiers") for q in self._generic.get("qualifiers") or ()]
        rng.shuffle(qualifiers)
        # A topic's own places and their variants ("modern operating room") come before the
        # generic ones, which are all an unknown topic has.
        for base in ([self._spot(t) for t in own], generic):
            yield from base
            for q in qualifiers:
                for spot in base:
                    yield self._qualified(spot, q)

    def _spot(self, term: Term) -> Spot:
        local = term.text(self.language)
        return Spot(name=local or term.en, english=term.en, translated=local is not None, details=term.details)

    def _named(self, place: Term, kind: str | None) -> Spot:
        """A generic place for this topic: "beekeeping workshop", "мастерская (пчеловодство)"."""
        patterns = self._generic.get("named") or {}
        topic_en = _lower_words(self.topic_english) + (f" {kind}" if kind else "")
        topic_local = _lower_words(self.topic_text) + (f" {kind}" if kind else "")
        english = patterns.get("en", "{topic} {place}").format(topic=topic_en, place=place.en)
        local_place, pattern = place.text(self.language), patterns.get(self.language)
        if self.language == "en" or local_place is None or pattern is None:
            return Spot(name=english, english=english, translated=self.language == "en")
        return Spot(name=pattern.format(topic=topic_local, place=local_place), english=english)

    def _qualified(self, spot: Spot, q: Term) -> Spot:
        patterns = self._generic.get("qualified") or {}
        english = patterns.get("en", "{qualifier} {location}").format(qualifier=q.en, location=spot.english)
        local_q, pattern = q.text(self.language), patterns.get(self.language)
        if self.language == "en" or not spot.translated or local_q is None or pattern is None:
            return Spot(name=english, english=english, translated=self.language == "en", details=spot.details)
        return Spot(name=pattern.format(qualifier=local_q, location=spot.name), english=english,
                    details=spot.details)

    # ---------------------------------------------------------------- prompts

    def prompts(self, kind: str, spot: Spot, count: int, *, seed: int, start: int = 0) -> list[Draft]:
        """Prompts ``start`` .. ``start + count - 1`` of a spot's stream (fewer when its
        attribute combinations run out). The stream depends only on seed, kind and spot."""
        spec = self.spec(kind)
        axes = dict(spec.axes)
        if spot.details and "detail" in spec.order:
            axes["detail"] = spot.details
        rng = random.Random(f"bildwerk-pool:{seed}:prompts:{kind}:{spot.english}")
        out = []
        for i, combo in enumerate(_combinations(axes, rng)):
            if i >= start + count:
                break
            if i >= start:
                out.append(self._draft(spec, spot, combo))
        return out

    def _draft(self, spec: KindSpec, spot: Spot, combo: dict[str, Term]) -> Draft:
        english: list[str] = []
        local: list[str | None] = []
        attributes: dict[str, str] = {}
        for part in spec.order:
            if part == "location":
                english.append(spot.english)
                local.append(spot.name if spot.translated else None)
            elif part in combo:
                term = combo[part]
                english.append(term.en)
                local.append(term.text(self.language))
                attributes[part] = term.en
                attributes.update({k: v for k, v in term.also.items() if k not in attributes})
        original = None
        if self.language != "en" and all(p is not None for p in local):
            original = ", ".join(p for p in local if p)
        return Draft(prompt=", ".join(english), original=original, attributes=attributes)


def _combinations(axes: Mapping[str, tuple[Term, ...]], rng: random.Random) -> Iterator[dict[str, Term]]:
    """Attribute combinations without repeats: each axis deals its values from a shuffled
    deck and reshuffles when the deck is empty, so values are used evenly and the pairing of
    values across axes changes from round to round."""
    decks: dict[str, list[Term]] = {a: [] for a in axes}
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    while repeats < _MAX_REPEATS:
        combo = {}
        for axis, values in axes.items():
            if not decks[axis]:
                decks[axis] = rng.sample(list(values), len(values))
            combo[axis] = decks[axis].pop()
        key = tuple(t.en for t in combo.values())
        if key in seen:
            repeats += 1
            continue
        repeats = 0
        seen.add(key)
        yield combo


def _lower_words(text: str) -> str:
    """Lower case for a topic inside a name, keeping acronyms ("IT", "AI") as written."""
    return " ".join(w if (len(w) > 1 and w.isupper()) else w.lower() for w in text.split())
