"""What the store hands out (rows as frozen dataclasses), the names it accepts, and the
helpers that turn requests into the columns search and export use."""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bildwerk.core.control import MAX_CONTROL_UNITS, control_role

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
APIS = ("native", "a1111", "openai", "museum", "pool")
ENGINES = ("local", "openai")
# The request's picture and mask, and each ControlNet unit's control picture (core/control.py).
INPUT_ROLES = ("image", "mask") + tuple(control_role(i) for i in range(MAX_CONTROL_UNITS))

JOB_COLUMNS = (
    "id, created_at, started_at, finished_at, status, api, engine, model, mode, prompt, "
    "original_prompt, language, seed, request_json, options_json, record_json, error_type, "
    "error_message, cancel_requested, attempts, worker_id, lease_until, pool_id, pool_item"
)

# SQLite's historical limit on bound variables; IN lists are chunked below it.
MAX_VARS = 500


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class JobResult:
    idx: int
    sha256: str
    seed: int | None
    width: int
    height: int
    bytes: int


@dataclass(frozen=True)
class JobRow:
    id: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    status: str
    api: str
    engine: str
    model: str | None
    mode: str | None
    prompt: str
    original_prompt: str | None
    language: str | None
    seed: int | None
    request: dict[str, Any]
    options: dict[str, Any]
    record: dict[str, Any] | None
    error_type: str | None
    error_message: str | None
    cancel_requested: bool
    attempts: int
    inputs: dict[str, str] = field(default_factory=dict)  # role ("image", "mask") -> sha256
    results: list[JobResult] = field(default_factory=list)
    # The worker running it (or that ran it last) and until when its claim holds; None
    # for a claim without a worker id. lease_until is None once the job left running.
    worker_id: str | None = None
    lease_until: float | None = None
    # The image pool it belongs to and the plan item it makes (both None for other jobs).
    pool_id: str | None = None
    pool_item: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for the REST layer)."""
        return asdict(self)


def now() -> float:
    return time.time()


def fold(text: str) -> str:
    """Normalised, case-folded text for search: Unicode-aware, unlike SQLite's LIKE."""
    return unicodedata.normalize("NFKC", text).casefold()


def json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def chunks(items: Sequence[str], size: int = MAX_VARS) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def request_columns(request: dict[str, Any]) -> dict[str, Any]:
    """The request fields copied into columns for filtering and search."""
    record = request.get("prompt_record")
    record = record if isinstance(record, dict) else {}
    prompt = request.get("prompt")
    prompt = prompt if isinstance(prompt, str) else ""
    original = record.get("original")
    original = original if isinstance(original, str) else None
    language = record.get("language")
    language = language.lower() if isinstance(language, str) and language else None
    seed = request.get("seed")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    model = request.get("model")
    mode = request.get("mode")
    return {
        "model": model if isinstance(model, str) else None,
        "mode": mode if isinstance(mode, str) else None,
        "prompt": prompt,
        "original_prompt": original,
        "language": language,
        "seed": seed,
        "search_text": fold(prompt + "\n" + (original or "")),
    }
