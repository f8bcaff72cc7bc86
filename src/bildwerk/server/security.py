"""Request guards, as plain ASGI middleware: Host, API key, Origin, body size.

- Host: only the names this server is known by are served (400 otherwise): the loopback
  names, the bind address, and the configured ones (``BILDWERK_ALLOWED_HOSTS``; ``*`` any).
  A web page that rebinds its own name to 127.0.0.1 reaches the server with its own name in
  Host (and in Origin), so comparing Origin with Host alone lets it in; the allow-list does not.
- Body size: a declared Content-Length over the limit is refused before reading; a chunked
  body is counted as it arrives and cut off at the limit (413).
- API key: when the server has one, every request but the open ones (health, readiness, the
  web interface's static files, the login) must carry it as ``Authorization: Bearer KEY`` or
  ``X-API-Key: KEY`` (compared in constant time), or the session cookie a login set
  (sessions.py). A cookie-authenticated state-changing request must also come with its page's
  Origin (this server's own, or an allowed one): cookies travel on their own, headers do not.
- Origin: a browser's state-changing request from another origin is refused (403), so a web
  page cannot drive a server on localhost (ComfyUI #4850). Clients that send no Origin
  (SDKs, curl, scripts) are not affected. An Origin is this server's own only when it equals
  the Host and its host is allowed; ``BILDWERK_ALLOWED_ORIGINS`` lists other pages.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from bildwerk.server.sessions import SessionSigner, cookie_value

OPEN_PATHS = frozenset({"/health", "/ready"})
# Served without a key too: the web interface's page and files (it asks for the key itself),
# the login, and the API docs page (its document, /openapi.json, needs the key).
SESSION_PATH = "/api/v1/session"
PUBLIC_PATHS = frozenset({"/", "/docs", "/favicon.ico", SESSION_PATH})
PUBLIC_PREFIXES = ("/ui/", "/docs-assets/")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
ANY_HOST = "*"


def host_name(value: str) -> str:
    """The host of a Host header (or an allow-list entry): lower-case, without the port, the
    IPv6 brackets and a trailing dot; '' when it is not a host name at all."""
    value = value.strip().lower()
    if value.startswith("["):  # [v6] or [v6]:port
        inner, closed, rest = value[1:].partition("]")
        port_ok = rest == "" or (rest.startswith(":") and rest[1:].isdigit())
        return inner if closed and port_ok else ""
    if value.count(":") > 1:  # a bare IPv6 literal (allow-list entries may be written so)
        return value
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return ""
    return name.rstrip(".")


def allowed_host_names(bind_host: str, configured: Iterable[str]) -> frozenset[str] | None:
    """The host names served: loopback names (a rebinding page cannot send them), the bind
    address unless it is a wildcard (0.0.0.0, ::), the configured ones; None means any."""
    entries = [e.strip() for e in configured if e.strip()]
    if ANY_HOST in entries:
        return None
    names = set(LOOPBACK_NAMES) | {host_name(e) for e in entries}
    bind = host_name(bind_host)
    if not _wildcard(bind):
        names.add(bind)
    return frozenset(n for n in names if n)


def is_public(path: str) -> bool:
    """Served without credentials (the login page must load before the key is known)."""
    return path in OPEN_PATHS or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


async def _send_error(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "type": "invalid_request_error"}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class GuardMiddleware:
    def __init__(self, app: Any, *, max_body_bytes: int, api_key: str | None,
                 allowed_origins: list[str] | None = None, allowed_hosts: frozenset[str] | None = LOOPBACK_NAMES,
                 sessions: SessionSigner | None = None) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.api_key = api_key
        self.sessions = sessions
        self.allowed = {o.rstrip("/") for o in (allowed_origins or [])}
        self.hosts = allowed_hosts  # None: any Host

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        method = scope.get("method", "GET")

        if not self._host_ok(headers.get("host")):
            await _send_error(send, 400, "invalid_host",
                              "this server does not answer to that Host name; the operator can add it to "
                              "BILDWERK_ALLOWED_HOSTS")
            return
        origin = headers.get("origin")
        if self.api_key and not is_public(path) and not self._key_ok(headers):
            if not self._session_ok(headers):
                await _send_error(send, 401, "unauthorized",
                                  "this server needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
                                  "(a browser logs in at POST /api/v1/session)")
                return
            if method in UNSAFE_METHODS and not origin:
                # A cookie alone does not prove that this server's page sent the request.
                await _send_error(send, 403, "forbidden_origin",
                                  "a state-changing request with a session cookie must carry its page's Origin; "
                                  "scripts send the API key instead")
                return
        if method in UNSAFE_METHODS and origin and not self._origin_ok(origin, headers):
            await _send_error(send, 403, "forbidden_origin",
                              f"requests from the web page {origin} are not allowed; add it to BILDWERK_ALLOWED_ORIGINS")
            return
        declared = headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body
            except ValueError:
                too_big = True
            if too_big:
                await _send_error(send, 413, "too_large", f"the request body is over {self.max_body} bytes")
                return

        seen = 0
        started = refused = False

        async def limited_receive() -> dict:
            nonlocal seen, started, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    # Answer 413 here: the body parser that called us turns any error into its
                    # own 400, which tracking_send then drops.
                    if not started:
                        started = refused = True
                        await _send_error(send, 413, "too_large",
                                          f"the request body is over {self.max_body} bytes")
                    raise _TooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            pass  # answered (413) in limited_receive, or the response had already begun

    def _key_ok(self, headers: dict[str, str]) -> bool:
        given = headers.get("x-api-key") or ""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), (self.api_key or "").encode())

    def _session_ok(self, headers: dict[str, str]) -> bool:
        return self.sessions is not None and self.sessions.valid(cookie_value(headers.get("cookie")))

    def _host_ok(self, host: str | None) -> bool:
        # No Host at all (HTTP/1.0 by hand) is no browser, so no rebinding: served.
        return host is None or self.hosts is None or host_name(host) in self.hosts

    def _origin_ok(self, origin: str, headers: dict[str, str]) -> bool:
        origin = origin.rstrip("/")
        if origin in self.allowed:
            return True
        # The page this server served itself: the request's own Host, which passed the
        # allow-list before this check (an Origin equal to a forged Host never gets here).
        return urlsplit(origin).netloc == headers.get("host", "")
