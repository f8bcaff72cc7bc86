"""Request guards, as plain ASGI middleware: body size, API key, Origin.

- Body size: a declared Content-Length over the limit is refused before reading; a chunked
  body is counted as it arrives and cut off at the limit (413).
- API key: when the server has one, every request but /health and /ready must carry it as
  ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (compared in constant time).
- Origin: a browser's state-changing request from another origin is refused (403), so a web
  page cannot drive a server on localhost (ComfyUI #4850). Clients that send no Origin
  (SDKs, curl, scripts) are not affected.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import urlsplit

OPEN_PATHS = frozenset({"/health", "/ready"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _send_error(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "type": "invalid_request_error"}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class GuardMiddleware:
    def __init__(self, app: Any, *, max_body_bytes: int, api_key: str | None,
                 allowed_origins: list[str] | None = None) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.api_key = api_key
        self.allowed = {o.rstrip("/") for o in (allowed_origins or [])}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        method = scope.get("method", "GET")

        if self.api_key and path not in OPEN_PATHS and not self._key_ok(headers):
            await _send_error(send, 401, "unauthorized",
                              "this server needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
            return
        origin = headers.get("origin")
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

    def _origin_ok(self, origin: str, headers: dict[str, str]) -> bool:
        origin = origin.rstrip("/")
        if origin in self.allowed:
            return True
        host = headers.get("host", "")
        return urlsplit(origin).netloc == host  # the page this server served itself
