"""A loopback stand-in for Azure Computer Vision v3.2 "describe".

A real HTTP server on 127.0.0.1 (ephemeral port, its own thread) that checks requests
the way Azure does: the path, the ``Ocp-Apim-Subscription-Key`` header, an
``application/octet-stream`` body that is an image. It answers with Azure's JSON
shapes, and replies can be scripted (429 with Retry-After, 500, slow answers, no
captions) to exercise a client's error handling::

    with FakeAzureVision(key="k") as azure:
        azure.reply(429, headers={"Retry-After": "0"})   # first request: rate limited
        client = AzureDescriber(endpoint=azure.endpoint, key="k")
        client.describe(image)                            # retried, then the default answer
        azure.requests[-1].image()                        # what the client sent
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any

from PIL import Image

API_PATH = "/vision/v3.2/describe"


def describe_body(captions: list[tuple[str, float]] | None = None,
                  tags: list[str] | None = None, *, size: tuple[int, int] = (0, 0),
                  request_id: str = "00000000-0000-0000-0000-000000000000") -> dict[str, Any]:
    """Azure's success answer for describe."""
    return {
        "description": {
            "tags": list(tags or []),
            "captions": [{"text": t, "confidence": c} for t, c in (captions or [])],
        },
        "requestId": request_id,
        "metadata": {"width": size[0], "height": size[1], "format": "Png"},
        "modelVersion": "2021-05-01",
    }


def error_body(code: str, message: str) -> dict[str, Any]:
    """Azure's error answer."""
    return {"error": {"code": code, "message": message}}


@dataclass
class Reply:
    """One scripted answer: status, JSON (or raw bytes) body, headers, delay before it."""

    status: int = 200
    body: dict[str, Any] | bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class RecordedRequest:
    """What a client sent (headers with lower-case names)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def image(self) -> Image.Image:
        with Image.open(BytesIO(self.body)) as im:
            im.load()
            return im.copy()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a deliberately slow reply must not hold up close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out hang up mid-reply; that is the point of those tests


class FakeAzureVision:
    """Azure Computer Vision "describe" on a loopback port; see the module docstring."""

    def __init__(self, key: str = "fake-azure-key", *,
                 captions: list[tuple[str, float]] | None = None,
                 tags: list[str] | None = None) -> None:
        self.key = key
        self.captions = [("a red circle on a white background", 0.87)] if captions is None else captions
        self.tags = ["circle", "red", "graphics"] if tags is None else tags
        self.requests: list[RecordedRequest] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # scripting ----------------------------------------------------------------------

    def reply(self, status: int = 200, body: dict[str, Any] | bytes | None = None, *,
              headers: dict[str, str] | None = None, delay: float = 0.0) -> None:
        """Queue one answer for the next valid request (after that, the default answer).

        A success without a body gets the default describe answer. A 429 without a body gets Azure's rate-limit message; other error statuses without
        a body get a generic Azure error.
        """
        if body is None and status == 429:
            body = error_body("429", "Rate limit is exceeded. Try again in 1 seconds.")
        elif body is None and status >= 400:
            body = error_body(str(status), "Scripted failure.")
        with self._lock:
            self._replies.append(Reply(status, body, dict(headers or {}), delay))

    def _next_reply(self, size: tuple[int, int]) -> Reply:
        with self._lock:
            reply = self._replies.popleft() if self._replies else Reply()
        if reply.body is None:  # a scripted success (e.g. only slow) gets the default answer
            reply.body = describe_body(self.captions, self.tags, size=size)
        return reply

    # lifecycle ----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAzureVision:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handle(self)

        self._server = _Server(("127.0.0.1", 0), Handler)
        # A short poll interval keeps close() quick.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="fake-azure-vision")
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAzureVision:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # serving ------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        request = RecordedRequest(
            method=h.command,
            path=url.path,
            query=urllib.parse.parse_qs(url.query),
            headers={k.lower(): v for k, v in h.headers.items()},
            body=body,
        )
        with self._lock:
            self.requests.append(request)
        reply = self._check(request)
        if reply is None:
            try:
                size = request.image().size
            except Exception:
                reply = Reply(400, error_body(
                    "InvalidImageFormat", "Input data is not a valid image."))
            else:
                reply = self._next_reply(size)
        self._send(h, reply)

    def _check(self, r: RecordedRequest) -> Reply | None:
        """Azure's own checks, in Azure's order; None when the request is acceptable."""
        if r.path != API_PATH:
            return Reply(404, error_body("404", "Resource not found"))
        if r.headers.get("ocp-apim-subscription-key") != self.key:
            return Reply(401, error_body(
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make "
                "sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource.",
            ))
        if r.method != "POST":
            return Reply(405, error_body("405", "Method not allowed"))
        if r.headers.get("content-type", "").split(";")[0].strip() != "application/octet-stream":
            return Reply(415, error_body("BadArgument", "Unsupported media type."))
        if not r.body:
            return Reply(400, error_body("InvalidImageSize", "Image size is too small."))
        return None

    def _send(self, h: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.delay:
            time.sleep(reply.delay)
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", "application/json; charset=utf-8")
            h.send_header("Content-Length", str(len(payload)))
            h.send_header("apim-request-id", "fake-request")
            for name, value in reply.headers.items():
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(payload)
        except OSError:
            pass  # the client gave up (timeout tests)
