"""One reading of the ``openai`` SDK's failures, for every bildwerk client of an
OpenAI-compatible API (LLM prompt steps, the vision describer, the Images engine).

``explain`` turns an SDK exception into a kind and a one-line, key-free message; each
caller raises its own error type from it (prompt steps: ``PromptBackendError``; the
Images engine: ``RemoteTimeout``, ``RemoteRateLimited``...).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["timeout", "unreachable", "rate_limited", "auth", "forbidden", "bad_request", "status", "failed"]

# Provider messages sometimes echo a masked key ("Incorrect API key provided: sk-ab***yz").
_KEYLIKE = re.compile(r"\b(sk|pk|key)-[A-Za-z0-9_*.\-]{4,}")


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """One line without any of ``secrets`` or anything shaped like an API key."""
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= 4:
            text = text.replace(secret, "***")
    return one_line(_KEYLIKE.sub(r"\1-***", text))


def detail(exc: Any, secrets: Iterable[str | None] = ()) -> str:
    """The useful part of an API error: the body's ``error.message`` when there is one."""
    body = getattr(exc, "body", None)
    message = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else None
    return redact(str(message or getattr(exc, "message", "") or exc), secrets)


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``Retry-After`` (number or HTTP date); None if absent."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    raw = headers.get("retry-after")
    if raw:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return None


def _seconds(timeout: Any) -> str:
    value = getattr(timeout, "read", timeout)  # an httpx Timeout, or a number
    return f"{float(value):g} s" if isinstance(value, int | float) else "the timeout"


@dataclass(frozen=True)
class Failure:
    kind: Kind
    message: str
    status: int | None = None
    retry_after: float | None = None


def explain(exc: Exception, *, where: str, secrets: Iterable[str | None] = (), timeout: Any = None,
            retries: int = 0, key_hint: str = "OPENAI_API_KEY") -> Failure:
    """``where`` names the endpoint and model ("LLM endpoint http://… (model m)")."""
    import openai

    secrets = list(secrets)
    # Subclasses first: APITimeoutError is an APIConnectionError; the status errors are
    # APIStatusErrors.
    if isinstance(exc, openai.APITimeoutError):
        return Failure("timeout", f"{where} timed out: no answer within {_seconds(timeout)} ({retries} retries)")
    if isinstance(exc, openai.APIConnectionError):
        cause = f": {redact(str(exc.__cause__), secrets)}" if exc.__cause__ else ""
        return Failure("unreachable", f"{where} could not be reached{cause}")
    if isinstance(exc, openai.RateLimitError):
        wait = retry_after_seconds(getattr(exc.response, "headers", None))
        hint = f"; retry after {wait:g} s" if wait is not None else ""
        return Failure("rate_limited", f"{where} is rate limited (HTTP 429) after {retries} retries: "
                                       f"{detail(exc, secrets)}{hint}", 429, wait)
    if isinstance(exc, openai.AuthenticationError):
        # OpenAI's own 401 text contains fragments of the key: not repeated.
        return Failure("auth", f"{where} rejected the API key (HTTP 401); set {key_hint} to a valid key", 401)
    if isinstance(exc, openai.PermissionDeniedError):
        return Failure("forbidden", f"{where} refused access (HTTP 403): {detail(exc, secrets)}; check "
                                    f"that the key in {key_hint} may use it", 403)
    if isinstance(exc, openai.BadRequestError):
        return Failure("bad_request", f"{where} answered HTTP 400: {detail(exc, secrets)}", 400)
    if isinstance(exc, openai.APIStatusError):
        return Failure("status", f"{where} answered HTTP {exc.status_code}: {detail(exc, secrets)}",
                       exc.status_code)
    # Malformed answers (APIResponseValidationError) and anything else the SDK raises.
    return Failure("failed", f"{where} failed: {redact(str(exc), secrets)}")
