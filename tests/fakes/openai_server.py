"""A loopback stand-in for the OpenAI REST API, real enough for the official SDK.

It is a real HTTP server on 127.0.0.1 (ephemeral port, background thread), so tests go
through the SDK's whole stack: URL building, headers, retries, timeouts and parsing.

    with FakeOpenAIServer(responder=lambda body: "a lake") as server:
        chat = OpenAIChat(base_url=server.base_url, api_key="k")
        ...
        server.requests[0].json["model"]

Routes live in a table keyed by (method, path below /v1); more can be added with
:meth:`FakeOpenAIServer.add_route`. Chat completions and the Images API (generations,
edits, variations) are served out of the box. Image answers come from ``image_responder``
(an :class:`ImageCall` in, a PIL image out); the default behaves like gpt-image edits in
that every returned pixel differs from the image that was sent.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class UploadedFile:
    """One file part of a multipart/form-data body."""

    filename: str | None
    content_type: str | None
    data: bytes

    def image(self) -> Image.Image:
        """The upload opened as a (loaded) PIL image."""
        with Image.open(io.BytesIO(self.data)) as im:
            im.load()
            return im.copy()


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str  # full path, e.g. "/v1/chat/completions"
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any = None  # the parsed body when it was JSON
    # multipart/form-data bodies: text fields and file parts by field name (last one wins)
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

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


# --------------------------------------------------------------------------- Images API

# Sizes each model family accepts, as the real API enforces them.
IMAGE_SIZES: dict[str, tuple[str, ...]] = {
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image": ("1024x1024", "1536x1024", "1024x1536", "auto"),
}
# dall-e-2 uploads must stay under 4 MB, like the real service demands.
DALL_E_2_MAX_UPLOAD = 4 * 1024 * 1024


@dataclass
class ImageCall:
    """What the image responder is asked to draw: one image of one Images API answer."""

    endpoint: str  # "generations", "edits" or "variations"
    model: str
    prompt: str | None  # None for variations
    width: int
    height: int
    index: int  # position of this image in the answer (0..n-1)
    image: Image.Image | None  # the uploaded image (edits, variations)
    mask: Image.Image | None  # the uploaded mask (edits that sent one)
    request: RecordedRequest


ImageResponder = Callable[[ImageCall], Image.Image]


def default_image_responder(call: ImageCall) -> Image.Image:
    """Edits and variations: the uploaded image inverted; generations: colour plus noise.

    Inverting changes every pixel (255 - v never equals v), as a gpt-image edit that
    repaints the whole canvas would, so tests can prove what a local composite keeps.
    """
    if call.image is not None:
        rgb = call.image.convert("RGB")
        if rgb.size != (call.width, call.height):
            rgb = rgb.resize((call.width, call.height), Image.Resampling.BILINEAR)
        return Image.fromarray(255 - np.asarray(rgb))
    rng = np.random.default_rng(call.index)  # deterministic per position
    colour = np.array([40 + 60 * (call.index % 4), 90, 200 - 30 * (call.index % 5)])
    noise = rng.integers(-30, 31, size=(call.height, call.width, 3))
    return Image.fromarray(np.clip(colour + noise, 0, 255).astype(np.uint8))


def editable_area(mask: Image.Image) -> np.ndarray:
    """Where an OpenAI edit mask allows changes: its fully transparent pixels (alpha 0)."""
    return np.asarray(mask.convert("RGBA").getchannel("A")) == 0


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """Text fields and files of a multipart/form-data body (stdlib email parser)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    form: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    if not message.is_multipart():
        return form, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = UploadedFile(filename, part.get_content_type(), data)
        else:
            form[name] = data.decode("utf-8")
    return form, files


def _image_family(model: str) -> str | None:
    if model in ("dall-e-2", "dall-e-3"):
        return model
    if model.startswith(("gpt-image", "chatgpt-image")):
        return "gpt-image"
    return None


def _int_field(value: Any, default: int) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _image_answer(
    server: FakeOpenAIServer,
    request: RecordedRequest,
    *,
    endpoint: str,
    params: dict[str, Any],
    image: Image.Image | None = None,
    mask: Image.Image | None = None,
) -> Reply:
    """Check the parameters every endpoint shares, then draw and encode the answer."""
    model = str(params.get("model") or "dall-e-2")  # the API's default model
    family = _image_family(model)
    if family is None:
        return error_reply(400, f"Invalid model {model!r} for images.", code="invalid_value")
    n = _int_field(params.get("n"), 1)
    if n is None or not 1 <= n <= 10:
        return error_reply(400, "n must be an integer between 1 and 10.", code="invalid_value")
    if family == "dall-e-3" and n != 1:
        return error_reply(400, "You must provide n=1 for this model.", code="invalid_value")
    size = str(params.get("size") or "1024x1024")
    if size not in IMAGE_SIZES[family]:
        allowed = ", ".join(IMAGE_SIZES[family])
        return error_reply(
            400, f"Invalid size {size!r} for {model}; supported: {allowed}.", code="invalid_value"
        )
    width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
    response_format = params.get("response_format")
    if family == "gpt-image" and response_format is not None:
        return error_reply(400, "Unknown parameter: 'response_format'.", code="unknown_parameter")
    as_b64 = family == "gpt-image" or response_format == "b64_json"

    prompt = params.get("prompt")
    data = []
    for index in range(n):
        call = ImageCall(endpoint, model, prompt, width, height, index, image, mask, request)
        with server._lock:
            server.image_calls.append(call)
        picture = server.image_responder(call)
        item: dict[str, Any] = {"revised_prompt": None}
        if family == "dall-e-3":
            item["revised_prompt"] = f"{prompt}, in more words"
        if as_b64:
            buf = io.BytesIO()
            picture.save(buf, format="PNG")
            item["b64_json"] = base64.b64encode(buf.getvalue()).decode("ascii")
        else:
            item["url"] = f"https://images.invalid/{uuid.uuid4().hex}.png"
        data.append(item)
    body: dict[str, Any] = {"created": int(time.time()), "data": data}
    if family == "gpt-image":
        body.update(size=f"{width}x{height}", output_format="png", background="opaque")
    return Reply(body=body)


def _uploaded_image(
    request: RecordedRequest, name: str
) -> tuple[Image.Image | None, UploadedFile | None, Reply | None]:
    upload = request.files.get(name) or request.files.get(f"{name}[]")
    if upload is None:
        return None, None, None
    try:
        return upload.image(), upload, None
    except Exception:
        return None, upload, error_reply(400, f"Invalid {name}: not a readable image.")


def images_generations(server: FakeOpenAIServer, request: RecordedRequest) -> Reply:
    """``POST /v1/images/generations`` (JSON body)."""
    body = request.json
    if not isinstance(body, dict) or not str(body.get("prompt") or "").strip():
        return error_reply(400, "'prompt' is a required property.", code="invalid_request")
    return _image_answer(server, request, endpoint="generations", params=body)


def images_edits(server: FakeOpenAIServer, request: RecordedRequest) -> Reply:
    """``POST /v1/images/edits`` (multipart: image, optional mask, prompt, ...)."""
    form = request.form
    if not form.get("prompt", "").strip():
        return error_reply(400, "'prompt' is a required property.", code="invalid_request")
    model = form.get("model") or "dall-e-2"
    if _image_family(model) == "dall-e-3":
        return error_reply(
            400, "Invalid model dall-e-3: edits support dall-e-2 and gpt-image models.",
            code="invalid_value",
        )
    image, upload, bad = _uploaded_image(request, "image")
    if bad is not None:
        return bad
    if image is None or upload is None:
        return error_reply(400, "'image' is a required file.", code="invalid_request")
    mask, mask_upload, bad = _uploaded_image(request, "mask")
    if bad is not None:
        return bad
    if model == "dall-e-2":
        if len(upload.data) >= DALL_E_2_MAX_UPLOAD:
            return error_reply(400, "Uploaded image must be a PNG and less than 4 MB.")
        if image.width != image.height:
            return error_reply(400, "Uploaded image must be square.", code="invalid_value")
        if image.mode not in ("RGBA", "LA", "L"):
            return error_reply(
                400,
                f"Invalid input image - format must be in ['RGBA', 'LA', 'L'], got {image.mode}.",
            )
    if mask is not None:
        if mask.size != image.size:
            return error_reply(400, "Invalid mask: the mask and image must be the same size.")
        if mask.mode not in ("RGBA", "LA"):
            return error_reply(400, "Invalid mask: the mask must have an alpha channel.")
    return _image_answer(
        server, request, endpoint="edits", params=form, image=image, mask=mask
    )


def images_variations(server: FakeOpenAIServer, request: RecordedRequest) -> Reply:
    """``POST /v1/images/variations`` (multipart: image, n, size; dall-e-2 only)."""
    form = request.form
    model = form.get("model") or "dall-e-2"
    if model != "dall-e-2":
        return error_reply(400, f"Invalid model {model}: variations support dall-e-2 only.")
    image, upload, bad = _uploaded_image(request, "image")
    if bad is not None:
        return bad
    if image is None or upload is None:
        return error_reply(400, "'image' is a required file.", code="invalid_request")
    if len(upload.data) >= DALL_E_2_MAX_UPLOAD:
        return error_reply(400, "Uploaded image must be a PNG and less than 4 MB.")
    if image.width != image.height:
        return error_reply(400, "Uploaded image must be square.", code="invalid_value")
    return _image_answer(server, request, endpoint="variations", params=form, image=image)


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP server on 127.0.0.1 for tests; use as a context manager.

    ``responder`` turns a chat request body into the assistant's text;
    ``image_responder`` draws each image the Images API returns (default:
    :func:`default_image_responder`). With ``required_key`` set, requests without
    ``Authorization: Bearer <key>`` get 401.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        required_key: str | None = None,
        image_responder: ImageResponder | None = None,
    ) -> None:
        self.responder: Responder = responder or (lambda body: "ok")
        self.image_responder: ImageResponder = image_responder or default_image_responder
        self.required_key = required_key
        self.requests: list[RecordedRequest] = []
        self.image_calls: list[ImageCall] = []  # one per image drawn, in order
        self.routes: dict[tuple[str, str], Route] = {
            ("POST", "/chat/completions"): chat_completions,
            ("POST", "/images/generations"): images_generations,
            ("POST", "/images/edits"): images_edits,
            ("POST", "/images/variations"): images_variations,
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

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            # Streamed uploads (multipart from some HTTP clients) come without a length.
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        raw = self._read_body()
        content_type = self.headers.get("Content-Type") or ""
        parsed: Any = None
        if raw and "json" in content_type:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
        form, files = (
            parse_multipart(content_type, raw)
            if content_type.startswith("multipart/form-data")
            else ({}, {})
        )
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=raw,
            json=parsed,
            form=form,
            files=files,
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
