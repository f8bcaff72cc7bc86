"""The pool plan: what a pool will contain, as a file a person reviews and edits.

A plan is topic -> kinds (interiors, exteriors, items, or any others) with their target
counts -> locations (or items) per kind -> prompts per location -> images per prompt, plus the
generation settings every image shares. It is written as YAML (or JSON, by file suffix) and
read back with every field validated, so an edit with a typo fails with one line naming the
field before anything is generated.

Every image of a plan is a :class:`PoolItem` whose id is a hash of (pool, kind, location,
prompt index, seed): the same plan gives the same ids on every run and on every executor, so
a resumed run, a local run and a Ray run agree on what is done.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bildwerk.core.bounds import MAX_NAME_CHARS, MAX_PROMPT_CHARS, MAX_SEED
from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.text import check_text

PLAN_VERSION = 1
DEFAULT_MIX = {"interiors": 60, "exteriors": 20, "items": 20}
MAX_POOL_IMAGES = 1_000_000
MAX_KINDS = 32
# Top-up seeds of a prompt continue its seed sequence; this bounds how many spares one
# prompt may take before the run reports it cannot reach the target.
MAX_TOPUP_PER_PROMPT = 64


def slug(text: str, limit: int = 64) -> str:
    """A file- and URL-safe name from any text ("Medicine and health" -> "medicine-and-health";
    Cyrillic or Hangul kept as letters)."""
    norm = unicodedata.normalize("NFKC", text).lower()
    out = re.sub(r"[^\w]+", "-", norm, flags=re.UNICODE).strip("-_")
    return (out[:limit].strip("-_")) or "pool"


def parse_mix(text: str) -> dict[str, float]:
    """``interiors=60,exteriors=20,items=20`` -> {kind: share}; shares need not sum to 100."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidRequestError(f"mix entry {part!r} is not KIND=SHARE (e.g. interiors=60)")
        try:
            share = float(value)
        except ValueError:
            raise InvalidRequestError(f"mix entry {part!r}: the share {value.strip()!r} is not a number") from None
        if not share > 0 or share != share or share == float("inf"):
            raise InvalidRequestError(f"mix entry {part!r}: the share must be a positive number")
        if name in mix:
            raise InvalidRequestError(f"mix names the kind {name!r} twice")
        mix[check_text(name)] = share
    if not mix:
        raise InvalidRequestError("the mix names no kind (e.g. interiors=60,exteriors=20,items=20)")
    if len(mix) > MAX_KINDS:
        raise InvalidRequestError(f"the mix names {len(mix)} kinds; at most {MAX_KINDS}")
    return mix


def split_counts(total: int, shares: dict[str, float]) -> dict[str, int]:
    """``total`` images split by shares, rounding so the counts sum to ``total`` exactly
    (largest remainders get the spare images)."""
    s = sum(shares.values())
    exact = {k: total * v / s for k, v in shares.items()}
    counts = {k: int(x) for k, x in exact.items()}
    spare = total - sum(counts.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), list(shares).index(k)))[:spare]:
        counts[k] += 1
    return counts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolPrompt(_Strict):
    """One prompt of a location: ``images`` pictures from seeds ``seed``, ``seed + 1``, ..."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS,
                        description="What goes to the image model.")
    original: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS,
                                 description="The prompt in the plan's language, when it was written in another.")
    attributes: dict[str, str] = Field(default_factory=dict,
                                       description="The variety it was written for: lighting, time, viewpoint, people.")
    seed: int = Field(ge=0, le=MAX_SEED - MAX_TOPUP_PER_PROMPT - 1024)
    images: int = Field(default=1, ge=0, le=1024)

    @field_validator("prompt", "original")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return v if v is None else check_text(v).strip()


class PoolLocation(_Strict):
    """A location (for interiors and exteriors) or an item (for items)."""

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="As the planner or a person wrote it.")
    english: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    prompts: list[PoolPrompt] = Field(default_factory=list)

    @field_validator("name", "english")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return v if v is None else check_text(v).strip()


class PoolKind(_Strict):
    kind: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    share: float = Field(gt=0, description="Its part of the pool (percent or any weight).")
    images: int = Field(ge=0, le=MAX_POOL_IMAGES, description="How many accepted images it should have.")
    locations: list[PoolLocation] = Field(default_factory=list)

    @field_validator("kind")
    @classmethod
    def _text(cls, v: str) -> str:
        return check_text(v).strip()

    @property
    def planned(self) -> int:
        return sum(p.images for loc in self.locations for p in loc.prompts)


class PoolSettings(_Strict):
    """What every image of the pool shares (None: the model's own default)."""

    model: str | None = Field(default=None, max_length=1024)
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    style: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    translate: str = Field(default="auto", description="The prompt steps' translation mode.")


class PoolGates(_Strict):
    """Quality gates, each optional; what they rejected is kept aside with the reason."""

    nsfw: bool = True
    nsfw_threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    dedupe: bool = True
    dedupe_threshold: float = Field(default=0.97, gt=0.0, le=1.0,
                                    description="Image-embedding cosine above which a picture is a near-duplicate.")
    topup: bool = Field(default=True, description="Replace rejected images with new seeds of the same prompts.")


class PoolPlan(_Strict):
    version: int = PLAN_VERSION
    pool: str = Field(min_length=1, max_length=64, description="The pool's name (ids and folders derive from it).")
    topic: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    language: str | None = Field(default=None, max_length=16, description="The language the plan was written in.")
    images: int = Field(ge=1, le=MAX_POOL_IMAGES)
    kinds: list[PoolKind] = Field(min_length=1, max_length=MAX_KINDS)
    settings: PoolSettings = Field(default_factory=PoolSettings)
    gates: PoolGates = Field(default_factory=PoolGates)
    planner: dict[str, Any] = Field(default_factory=dict, description="How the plan was made (a record).")

    @field_validator("topic")
    @classmethod
    def _text(cls, v: str) -> str:
        return check_text(v).strip()

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: str) -> str:
        if slug(v) != v:
            raise ValueError(f"must be a slug like {slug(v)!r} (lower case, letters, digits, '-')")
        return v

    @model_validator(mode="after")
    def _unique(self) -> PoolPlan:
        kinds = [k.kind for k in self.kinds]
        if len(set(kinds)) != len(kinds):
            raise ValueError("a kind is listed twice")
        for k in self.kinds:
            names = [loc.name for loc in k.locations]
            if len(set(names)) != len(names):
                raise ValueError(f"kind {k.kind!r} lists a location twice")
        return self

    # ------------------------------------------------------------------ items

    def items(self) -> Iterator[PoolItem]:
        """Every planned image in plan order (kind, location, prompt, seed)."""
        for k in self.kinds:
            for loc in k.locations:
                for i, p in enumerate(loc.prompts):
                    for n in range(p.images):
                        yield PoolItem.of(self, k, loc, i, p, p.seed + n)

    def spares(self, kind: str) -> Iterator[PoolItem]:
        """Top-up items of one kind: the next seeds of its prompts after their planned ones,
        round robin over the kind's prompts (callers skip ids they have already made)."""
        k = self.kind(kind)
        pairs = [(loc, i, p) for loc in k.locations for i, p in enumerate(loc.prompts)]
        for extra in range(MAX_TOPUP_PER_PROMPT):
            for loc, i, p in pairs:
                yield PoolItem.of(self, k, loc, i, p, p.seed + p.images + extra)

    def kind(self, name: str) -> PoolKind:
        for k in self.kinds:
            if k.kind == name:
                return k
        raise InvalidRequestError(f"the plan has no kind {name!r}")

    @property
    def planned(self) -> int:
        return sum(k.planned for k in self.kinds)

    # ------------------------------------------------------------------ files

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> Path:
        """Write the plan (YAML, or JSON for a ``.json`` path) atomically."""
        path = Path(path)
        text = (json.dumps(self.dump(), ensure_ascii=False, indent=2) + "\n" if path.suffix.lower() == ".json"
                else to_yaml(self.dump()))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PoolPlan:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InvalidRequestError(f"no plan file {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidRequestError(f"cannot read the plan file {path}: {e}") from None
        return cls.parse(text, where=str(path))

    @classmethod
    def parse(cls, text: str, *, where: str = "the plan") -> PoolPlan:
        import yaml

        try:
            data = yaml.safe_load(text)  # YAML is a superset of JSON: one reader for both
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise InvalidRequestError(f"{where} is not valid YAML or JSON{at}: {getattr(e, 'problem', e)}") from None
        return cls.from_data(data, where=where)

    @classmethod
    def from_data(cls, data: Any, *, where: str = "the plan") -> PoolPlan:
        if not isinstance(data, dict):
            raise InvalidRequestError(f"{where} must be a mapping with topic, images and kinds")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "plan"
            more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
            raise InvalidRequestError(f"{where}: {loc}: {err['msg']}{more}") from None


def item_id(pool: str, kind: str, location: str, prompt_index: int, seed: int) -> str:
    """The deterministic id of one image of a pool: 16 hex digits."""
    key = "\x1f".join([pool, kind, location, str(int(prompt_index)), str(int(seed))])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


class PoolItem(BaseModel):
    """One image to make: where it sits in the plan and what it is made from."""

    model_config = ConfigDict(frozen=True)

    id: str
    pool: str
    topic: str
    kind: str
    location: str
    prompt_index: int
    prompt: str
    original: str | None = None
    seed: int

    @classmethod
    def of(cls, plan: PoolPlan, kind: PoolKind, loc: PoolLocation, index: int, p: PoolPrompt, seed: int) -> PoolItem:
        return cls(id=item_id(plan.pool, kind.kind, loc.name, index, seed), pool=plan.pool, topic=plan.topic,
                   kind=kind.kind, location=loc.name, prompt_index=index, prompt=p.prompt,
                   original=p.original, seed=seed)


def to_yaml(data: Any) -> str:
    """YAML a person can read and edit: block style, keys in model order, any script as is."""
    import yaml

    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=100, default_flow_style=False)
