"""A loopback stand-in for the OpenAI REST API, real enough for the official SDK.

It is a real HTTP server on 127.0.0.1 (ephemeral port, background thread), so tests go
through the SDK's whole stack: URL building, headers, retries, timeouts and parsing.

    with FakeOpenAIServer(responder=lambda body: "a lake") as server:
        chat = OpenAIChat(base_url=server.base_url, api_key="k")
        ...
        server.requests[0].json["model"]

Routes live in a table keyed by (method, path below /v1), so more endpoints (images
generations / edits / variations) can be added with :meth:`FakeOpenAIServer.add_route`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str  # full path, e.g. "/v1/chat/completions"
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any = None  # the parsed body when it was JSON

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Reply:
    """What a route answers: a status, a JSON (or raw bytes) body and extra headers."""

    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass
class _Fault:
    status: int | None  # None: answer normally (after the delay)
    delay: float
    headers: dict[str, str]
    message: str | None


Route = Callable[["FakeOpenAIServer", RecordedRequest], Reply]
Responder = Callable[[dict], str]

# OpenAI's error "type" for the statuses tests use; others fall back to api_error.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}


def error_reply(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> Reply:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": code,
        }
    }
    return Reply(status=status, body=body, headers=dict(headers or {}))


def chat_completions(server: FakeOpenAIServer, request: RecordedRequest) -> Reply:
    """``POST /v1/chat/completions``: one non-streamed chat.completion from the responder."""
    body = request.json
    if not isinstance(body, dict) or "messages" not in body or "model" not in body:
        return error_reply(400, "'model' and 'messages' are required", code="invalid_request")
    if body.get("stream"):
        return error_reply(400, "this fake server does not stream", code="unsupported")
    text = server.responder(body)
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    completion_tokens = len(text.split())
    return Reply(
        body={
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP server on 127.0.0.1 for tests; use as a context manager.

    ``responder`` turns a chat request body into the assistant's text. With
    ``required_key`` set, requests without ``Authorization: Bearer <key>`` get 401.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        required_key: str | None = None,
    ) -> None:
        self.responder: Responder = responder or (lambda body: "ok")
        self.required_key = required_key
        self.requests: list[RecordedRequest] = []
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "/chat/completions"): chat_completions,
        }
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- test controls

    def add_route(self, method: str, path: str, route: Route) -> None:
        """Serve ``method`` on ``/v1`` + ``path`` (e.g. "POST", "/images/generations")."""
        self.routes[(method.upper(), path)] = route

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        headers: dict[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests with HTTP ``status`` (e.g. 429 + Retry-After)."""
        with self._lock:
            self._faults.extend(_Fault(status, 0.0, dict(headers or {}), message) for _ in range(n))

    def delay_next(self, seconds: float, n: int = 1) -> None:
        """Hold the next ``n`` requests ``seconds`` before answering them normally."""
        with self._lock:
            self._faults.extend(_Fault(None, float(seconds), {}, None) for _ in range(n))

    @property
    def base_url(self) -> str:
        """The URL to give the SDK as ``base_url`` (ends in ``/v1``)."""
        if self._httpd is None:
            raise RuntimeError("the fake OpenAI server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeOpenAIServer:
        self._closing.clear()
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # Handler threads of kept-alive or stalled connections must not hold up close().
        httpd.daemon_threads = True
        httpd.block_on_close = False
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._httpd is None:
            return
        self._closing.set()  # wakes handlers sleeping in a delay
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:  # unblock handlers waiting on kept-alive connections
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- request handling

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def handle(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
        if self.required_key is not None:
            if request.header("authorization") != f"Bearer {self.required_key}":
                return error_reply(
                    401,
                    "Incorrect API key provided. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                )
        fault = self._take_fault()
        if fault is not None:
            if fault.delay > 0 and self._closing.wait(fault.delay):
                return error_reply(503, "server shutting down")
            if fault.status is not None:
                message = fault.message or f"{HTTPStatus(fault.status).phrase} (injected)"
                return error_reply(fault.status, message, headers=fault.headers)
        prefix = "/v1"
        path = request.path.split("?", 1)[0]
        route = None
        if path.startswith(prefix + "/"):
            route = self.routes.get((request.method, path[len(prefix) :]))
        if route is None:
            return error_reply(404, f"Unknown request URL: {request.method} {path}")
        return route(self, request)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAIServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's httpx client expects

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the client hung up first (e.g. after its timeout)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parsed: Any = None
        if raw and "json" in (self.headers.get("Content-Type") or ""):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=raw,
            json=parsed,
        )
        if raw and parsed is None and "json" in (self.headers.get("Content-Type") or ""):
            reply = error_reply(400, "We could not parse the JSON body of your request.")
            with self.fake._lock:
                self.fake.requests.append(request)
        else:
            reply = self.fake.handle(request)
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            payload = reply.body
        else:
            payload = json.dumps(reply.body if reply.body is not None else {}).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:16]}")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            # The client gave up (timeout) before the delayed answer; nothing to tell it.
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _serve
