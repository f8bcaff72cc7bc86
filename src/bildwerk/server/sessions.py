"""Browser sessions for a key-protected server: a login trades the API key for a signed,
expiring cookie, so the web interface never holds the key in JavaScript or in a URL and
EventSource (which cannot send headers) is authenticated too.

The cookie is ``ISSUED.NONCE.SIGNATURE``: HMAC-SHA256 under a key derived from the API key, so
it needs no server-side table, survives restarts, and every session ends when the operator
changes the key. It is HttpOnly (scripts cannot read it), SameSite=Strict (other sites'
requests do not carry it) and Secure behind https; the guard (security.py) also wants a
browser's own Origin on every state-changing request a cookie authenticates.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque

COOKIE = "bildwerk_session"
DEFAULT_SESSION_HOURS = 24 * 7
# Wrong keys tolerated per client address within the window before logins wait (429).
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0


class SessionSigner:
    def __init__(self, api_key: str, *, max_age_s: float = DEFAULT_SESSION_HOURS * 3600.0) -> None:
        self._key = hashlib.sha256(b"bildwerk-session\x00" + api_key.encode()).digest()
        self.max_age_s = max_age_s

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        body = f"{int(now if now is not None else time.time())}.{secrets.token_hex(16)}"
        return f"{body}.{self._sign(body)}"

    def expires(self, token: str) -> float | None:
        """When a valid token expires (epoch seconds); None for anything else."""
        issued, _, rest = token.partition(".")
        nonce, _, sig = rest.partition(".")
        if not (issued.isdigit() and len(issued) <= 12 and nonce and sig):
            return None
        if not hmac.compare_digest(sig.encode(), self._sign(f"{issued}.{nonce}").encode()):
            return None
        end = int(issued) + self.max_age_s
        now = time.time()
        return end if int(issued) <= now + 60 and now < end else None

    def valid(self, token: str | None) -> bool:
        return bool(token) and self.expires(token) is not None  # type: ignore[arg-type]


class LoginThrottle:
    """At most MAX_FAILURES wrong keys per client address a minute (a guessing script waits)."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        now = time.monotonic()
        with self._lock:
            seen = self._failures.get(client)
            while seen and now - seen[0] > FAILURE_WINDOW_S:
                seen.popleft()
            if seen is not None and not seen:
                del self._failures[client]
            if seen and len(seen) >= MAX_FAILURES:
                return max(1, int(FAILURE_WINDOW_S - (now - seen[0])) + 1)
        return 0

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
                self._failures.clear()
            self._failures.setdefault(client, deque()).append(time.monotonic())


def cookie_value(cookie_header: str | None) -> str | None:
    """The session cookie's value from a Cookie header (the first one with our name)."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value.strip().strip('"') or None
    return None
