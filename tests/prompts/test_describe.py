"""Describers (OpenAI vision, Azure describe, local ImageNet labels) and description merging.

The remote describers talk to real HTTP servers on 127.0.0.1: a minimal OpenAI chat
completions stand-in below (enough for the official SDK), and tests/fakes/azure_vision.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any

import pytest
import torch
from fakes.azure_vision import FakeAzureVision, describe_body, error_body
from PIL import Image, ImageDraw

from bildwerk.core.errors import (
    InvalidImageError,
    InvalidRequestError,
    PromptAnswerRejected,
    PromptBackendError,
)
from bildwerk.prompts.describe import (
    DESCRIBE_INSTRUCTION,
    AzureDescriber,
    Describer,
    Description,
    LocalDescriber,
    OpenAIVisionDescriber,
    describer,
    merge_description,
    merge_with_llm,
)

_ENV = (
    "BILDWERK_DESCRIBER", "BILDWERK_VISION_MODEL", "BILDWERK_LLM_BASE_URL",
    "BILDWERK_LLM_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_VISION_ENDPOINT",
    "AZURE_VISION_KEY",
)
OPENAI_KEY = "sk-test-0123456789abcdef"
AZURE_KEY = "azure-secret-key-42"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    # A developer's real keys or endpoints must never leak into these tests.
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def red_circle(size: tuple[int, int] = (96, 64), mode: str = "RGB") -> Image.Image:
    im = Image.new(mode, size, "white")
    w, h = size
    r = min(w, h) // 3
    ImageDraw.Draw(im).ellipse((w // 2 - r, h // 2 - r, w // 2 + r, h // 2 + r), fill="red")
    return im


def png_bytes(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- OpenAI stand-in


class FakeOpenAIVision:
    """POST /v1/chat/completions on 127.0.0.1: checks the key, records the JSON, answers."""

    def __init__(self, key: str = OPENAI_KEY, answer: str = "A red circle on white, flat style."):
        self.key = key
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.scripted: deque[tuple[int, dict[str, Any] | None, float]] = deque()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                fake.requests.append(json.loads(body or b"null"))
                status, payload, delay = fake._reply(self.path, self.headers)
                time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client timed out and hung up

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _reply(self, path: str, headers: Any) -> tuple[int, dict[str, Any], float]:
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}, 0
        token = headers.get("Authorization", "")
        if token != f"Bearer {self.key}":
            shown = token.removeprefix("Bearer ")
            masked = shown[:7] + "*" * 10 + shown[-4:]  # what OpenAI echoes back
            return 401, {"error": {
                "message": f"Incorrect API key provided: {masked}. You can find your API key "
                           "at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "param": None, "code": "invalid_api_key",
            }}, 0
        status, payload, delay = self.scripted.popleft() if self.scripted else (200, None, 0)
        if payload is None:
            payload = self.completion(self.answer)
        return status, payload, delay

    def completion(self, content: str) -> dict[str, Any]:
        model = self.requests[-1].get("model", "?") if self.requests else "?"
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
        }

    def sent_image(self, index: int = -1) -> tuple[str, Image.Image]:
        """The text part and the decoded image_url part of a recorded request."""
        content = self.requests[index]["messages"][0]["content"]
        text = next(p["text"] for p in content if p["type"] == "text")
        url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
        prefix = "data:image/png;base64,"
        assert url.startswith(prefix)
        with Image.open(BytesIO(base64.b64decode(url[len(prefix):], validate=True))) as im:
            assert im.format == "PNG"
            im.load()
            return text, im.copy()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def openai_fake():
    fake = FakeOpenAIVision()
    yield fake
    fake.close()


@pytest.fixture
def azure_fake():
    with FakeAzureVision(key=AZURE_KEY) as fake:
        yield fake


# --------------------------------------------------------------------------- OpenAI


def test_openai_describes_with_png_data_url(openai_fake):
    d = OpenAIVisionDescriber(base_url=openai_fake.base_url, api_key=OPENAI_KEY, max_retries=0)
    image = red_circle(mode="RGBA")
    result = d.describe(image)

    assert result == Description("A red circle on white, flat style.", "openai:gpt-4o-mini",
                                 None, [])
    assert isinstance(d, Describer)
    request = openai_fake.requests[-1]
    assert request["model"] == "gpt-4o-mini"
    assert [m["role"] for m in request["messages"]] == ["user"]
    text, sent = openai_fake.sent_image()
    assert text == DESCRIBE_INSTRUCTION
    assert same_pixels(sent, image.convert("RGB"))
    assert openai_fake.headers[-1]["authorization"] == f"Bearer {OPENAI_KEY}"


def test_openai_downscales_and_accepts_bytes(openai_fake):
    d = OpenAIVisionDescriber(base_url=openai_fake.base_url, api_key=OPENAI_KEY, max_retries=0)
    d.describe(png_bytes(red_circle((2048, 1024)), "JPEG"))
    _, sent = openai_fake.sent_image()
    assert sent.size == (1024, 512)
    with pytest.raises(InvalidImageError):
        d.describe(b"not an image")


def test_openai_settings_from_env(openai_fake, monkeypatch):
    monkeypatch.setenv("BILDWERK_VISION_MODEL", "vision-from-env")
    monkeypatch.setenv("BILDWERK_LLM_BASE_URL", openai_fake.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    d = describer("openai")
    assert d.name == "openai:vision-from-env"
    assert d.describe(red_circle()).backend == "openai:vision-from-env"
    assert openai_fake.requests[-1]["model"] == "vision-from-env"
    assert OPENAI_KEY not in repr(d)
    # BILDWERK_LLM_API_KEY wins over OPENAI_API_KEY
    monkeypatch.setenv("BILDWERK_LLM_API_KEY", "sk-other-key-000000")
    with pytest.raises(PromptBackendError, match="rejected the API key"):
        describer("openai:vision-from-env").describe(red_circle())


def test_openai_cleans_the_answer(openai_fake):
    openai_fake.answer = '  "A red circle\n on a white background."  '
    d = OpenAIVisionDescriber(base_url=openai_fake.base_url, api_key=OPENAI_KEY, max_retries=0)
    assert d.describe(red_circle()).text == "A red circle"


def test_openai_needs_a_key_or_base_url():
    with pytest.raises(PromptBackendError) as err:
        OpenAIVisionDescriber()
    for name in ("BILDWERK_LLM_API_KEY", "OPENAI_API_KEY", "BILDWERK_LLM_BASE_URL"):
        assert name in str(err.value)


def test_openai_base_url_without_key_is_allowed(openai_fake):
    openai_fake.key = "not-needed"  # what a keyless local server receives
    d = OpenAIVisionDescriber(base_url=openai_fake.base_url, max_retries=0)
    assert d.describe(red_circle()).text


def test_openai_rejected_key_names_endpoint_and_model_not_the_key(openai_fake):
    key = "sk-wrong-secret-987654321"
    d = OpenAIVisionDescriber(model="m1", base_url=openai_fake.base_url, api_key=key,
                              max_retries=0)
    with pytest.raises(PromptBackendError) as err:
        d.describe(red_circle())
    message = str(err.value)
    assert "rejected the API key" in message and "401" in message
    assert openai_fake.base_url in message and "m1" in message
    assert key not in message and key[:7] not in message and key[-4:] not in message


@pytest.mark.parametrize(("status", "payload", "expected"), [
    (500, {"error": {"message": "model overloaded", "type": "server_error"}},
     "HTTP 500: model overloaded"),
    (400, {"error": {"message": "image_url is only supported by vision models",
                     "type": "invalid_request_error"}}, "HTTP 400: image_url is only"),
    (200, None, "empty caption"),
])
def test_openai_errors_become_backend_errors(openai_fake, status, payload, expected):
    if payload is None:
        openai_fake.answer = "   "
    openai_fake.scripted.append((status, payload, 0))
    d = OpenAIVisionDescriber(base_url=openai_fake.base_url, api_key=OPENAI_KEY, max_retries=0)
    with pytest.raises(PromptBackendError, match=expected):
        d.describe(red_circle())


def test_openai_timeout_and_unreachable(openai_fake):
    openai_fake.scripted.append((200, None, 2.0))
    slow = OpenAIVisionDescriber(base_url=openai_fake.base_url, api_key=OPENAI_KEY,
                                 timeout=0.3, max_retries=0)
    with pytest.raises(PromptBackendError, match="no answer within 0.3 s"):
        slow.describe(red_circle())
    gone = OpenAIVisionDescriber(base_url=f"http://127.0.0.1:{free_port()}/v1",
                                 api_key=OPENAI_KEY, max_retries=0)
    with pytest.raises(PromptBackendError, match="could not be reached"):
        gone.describe(red_circle())


# --------------------------------------------------------------------------- Azure


def test_azure_describes(azure_fake):
    d = AzureDescriber(endpoint=azure_fake.endpoint + "/", key=AZURE_KEY)
    image = red_circle()
    result = d.describe(image)

    assert result == Description("a red circle on a white background", "azure", 0.87,
                                 [("circle", 1.0), ("red", 1.0), ("graphics", 1.0)])
    assert isinstance(d, Describer)
    (request,) = azure_fake.requests
    assert request.method == "POST"
    assert request.path == "/vision/v3.2/describe"
    assert request.query == {"maxCandidates": ["1"], "language": ["en"]}
    assert request.headers["ocp-apim-subscription-key"] == AZURE_KEY
    assert request.headers["content-type"] == "application/octet-stream"
    assert same_pixels(request.image(), image)
    assert AZURE_KEY not in repr(d)


def test_azure_picks_the_most_confident_caption(azure_fake):
    azure_fake.reply(200, describe_body([("a ball", 0.4), ("a red circle", 0.9)], ["red"]))
    d = AzureDescriber(endpoint=azure_fake.endpoint, key=AZURE_KEY, max_candidates=3,
                       language="de")
    result = d.describe(png_bytes(red_circle()))
    assert (result.text, result.confidence) == ("a red circle", 0.9)
    assert azure_fake.requests[-1].query == {"maxCandidates": ["3"], "language": ["de"]}


def test_azure_small_images_are_upscaled_to_its_minimum(azure_fake):
    AzureDescriber(endpoint=azure_fake.endpoint, key=AZURE_KEY).describe(red_circle((40, 20)))
    assert azure_fake.requests[-1].image().size == (100, 50)


def test_azure_settings_from_env(azure_fake, monkeypatch):
    monkeypatch.setenv("AZURE_VISION_ENDPOINT", azure_fake.endpoint)
    monkeypatch.setenv("AZURE_VISION_KEY", AZURE_KEY)
    monkeypatch.setenv("BILDWERK_DESCRIBER", "azure")
    d = describer(None)
    assert isinstance(d, AzureDescriber)
    assert d.describe(red_circle()).backend == "azure"


def test_azure_needs_endpoint_and_key():
    with pytest.raises(PromptBackendError, match="AZURE_VISION_ENDPOINT and AZURE_VISION_KEY"):
        AzureDescriber()
    with pytest.raises(PromptBackendError, match="needs AZURE_VISION_KEY"):
        AzureDescriber(endpoint="http://127.0.0.1:9")


def test_azure_retries_429_after_retry_after(azure_fake):
    azure_fake.reply(429, headers={"Retry-After": "0"})
    d = AzureDescriber(endpoint=azure_fake.endpoint, key=AZURE_KEY, max_retries=2)
    start = time.monotonic()
    result = d.describe(red_circle())
    assert result.text == "a red circle on a white background"
    assert len(azure_fake.requests) == 2
    assert time.monotonic() - start < 2


def test_azure_caps_the_retry_wait_and_gives_up(azure_fake):
    for _ in range(3):
        azure_fake.reply(429, headers={"Retry-After": "3600"})
    d = AzureDescriber(endpoint=azure_fake.endpoint, key=AZURE_KEY, max_retries=1,
                       max_retry_wait=0.05)
    start = time.monotonic()
    with pytest.raises(PromptBackendError, match="rate limiting.*429.*Rate limit is exceeded"):
        d.describe(red_circle())
    assert time.monotonic() - start < 2
    assert len(azure_fake.requests) == 2  # the first try and one retry


def test_azure_rejected_key(azure_fake):
    d = AzureDescriber(endpoint=azure_fake.endpoint, key="wrong-key-123")
    with pytest.raises(PromptBackendError) as err:
        d.describe(red_circle())
    message = str(err.value)
    assert "rejected the key (HTTP 401)" in message
    assert "AZURE_VISION_KEY" in message and azure_fake.endpoint in message
    assert "invalid subscription key" in message
    assert "wrong-key-123" not in message


def test_azure_quota_is_not_a_key_problem(azure_fake):
    azure_fake.reply(403, error_body("403", "Out of call volume quota for ComputerVision F0."))
    d = AzureDescriber(endpoint=azure_fake.endpoint, key=AZURE_KEY)
    with pytest.raises(PromptBackendError, match="quota exhausted") as err:
        d.describe(red_circle())
    assert "rejected" not in str(err.value)


def test_azure_error_json_is_reported(azure_fake):
    azure_fake.reply(500, error_body("InternalServerError", "Something went wrong."))
    d = AzureDescriber(endpoint=azure_fake.endpoint, key=AZURE_KEY)
    with pytest.raises(PromptBackendError,
                       match=r"HTTP 500 \(InternalServerError: Something went wrong.\)"):
        d.describe(red_circle())
    azure_fake.reply(502, b"<html>Bad gateway</html>")
    with pytest.raises(PromptBackendError, match="HTTP 502.*Bad gateway"):
        d.describe(red_circle())


def test_azure_timeout(azure_fake):
    azure_fake.reply(200, delay=2.0)
    d = AzureDescriber(endpoint=azure_fake.endpoint, key=AZURE_KEY, timeout=0.3)
    with pytest.raises(PromptBackendError, match="no answer within 0.3 s"):
        d.describe(red_circle())


def test_azure_unreachable():
    d = AzureDescriber(endpoint=f"http://127.0.0.1:{free_port()}", key=AZURE_KEY)
    with pytest.raises(PromptBackendError, match="could not be reached"):
        d.describe(red_circle())


def test_azure_without_captions_falls_back_to_tags(azure_fake):
    azure_fake.reply(200, describe_body([], ["grass", "outdoor", "dog"]))
    azure_fake.reply(200, describe_body([(" ", 0.5)], ["sky"]))  # a blank caption is none
    azure_fake.reply(200, describe_body([], []))
    d = AzureDescriber(endpoint=azure_fake.endpoint, key=AZURE_KEY)
    first = d.describe(red_circle())
    assert first.text == "a picture with: grass, outdoor, dog"
    assert first.confidence is None
    assert [name for name, _ in first.labels] == ["grass", "outdoor", "dog"]
    assert d.describe(red_circle()).text == "a picture with: sky"
    with pytest.raises(PromptBackendError, match="neither a caption nor tags"):
        d.describe(red_circle())


def test_azure_unreadable_json(azure_fake):
    azure_fake.reply(200, b"{not json")
    with pytest.raises(PromptBackendError, match="unreadable JSON"):
        AzureDescriber(endpoint=azure_fake.endpoint, key=AZURE_KEY).describe(red_circle())


# --------------------------------------------------------------------------- local


@pytest.fixture(scope="module")
def local_describer():
    return LocalDescriber()


def test_local_describer_for_real(local_describer):
    image = red_circle((128, 128))
    first = local_describer.describe(image)
    assert isinstance(local_describer, Describer)
    assert first.text.strip() and first.text == first.text.strip()
    assert first.backend == "local:efficientnet-lite0"
    assert len(first.labels) == 3
    scores = [score for _, score in first.labels]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores) and sum(scores) <= 1.0 + 1e-6
    assert first.confidence == scores[0]
    assert first.labels[0][0] in first.text
    assert local_describer.describe(png_bytes(image)) == first  # deterministic, bytes too


class FixedJudge:
    """A judge stand-in whose logits are chosen by the test."""

    name = "fixed"

    def __init__(self, logits: dict[int, float]):
        self.row = torch.full((1000,), -20.0)
        for index, value in logits.items():
            self.row[index] = value
        self.calls = 0

    def logits(self, images):
        self.calls += 1
        return self.row.repeat(len(images), 1)


TABBY, TIGER_CAT, EGYPTIAN_CAT, SUNGLASSES, HOCKEY_PUCK = 281, 282, 285, 837, 746


# Twenty unlikely classes keep the top probability below LocalDescriber.CONFIDENT.
FILLER = {i: -1.0 for i in range(20)}


@pytest.mark.parametrize(("logits", "top", "text"), [
    ({TABBY: 10.0}, 3, "a tabby cat"),
    ({EGYPTIAN_CAT: 10.0}, 3, "an Egyptian cat"),
    ({SUNGLASSES: 10.0}, 3, "sunglasses"),
    ({HOCKEY_PUCK: 10.0}, 3, "a hockey puck"),
    ({TABBY: 1.0, TIGER_CAT: 0.8, **FILLER}, 2, "a picture of a tabby cat or a tiger cat"),
    ({TABBY: 1.0, TIGER_CAT: 0.9, EGYPTIAN_CAT: 0.8, **FILLER}, 3,
     "a picture of a tabby cat, a tiger cat or an Egyptian cat"),
    # an alternate far below the top one is not worth naming
    ({TABBY: 2.0, TIGER_CAT: -2.0, **FILLER}, 2, "a picture of a tabby cat"),
    # when everything is unlikely, near-ties are named even below 5 %
    ({TABBY: 0.2, TIGER_CAT: 0.0, **{i: -0.5 for i in range(100)}}, 2,
     "a picture of a tabby cat or a tiger cat"),
])
def test_local_text(logits, top, text):
    d = LocalDescriber(judge=FixedJudge(logits), top=top)
    result = d.describe(red_circle())
    assert result.text == text
    assert result.backend == "local:fixed"
    assert result.confidence == result.labels[0][1]


def test_local_loads_the_judge_lazily(monkeypatch):
    import bildwerk.models.imagenet.classifier as judge_module

    built = []
    monkeypatch.setattr(judge_module, "Judge", lambda: built.append(1) or FixedJudge({TABBY: 9}))
    d = LocalDescriber(top=1)
    assert built == []
    assert d.describe(red_circle()).labels == [("tabby cat", pytest.approx(1.0))]
    d.describe(red_circle())
    assert built == [1]
    with pytest.raises(InvalidRequestError):
        LocalDescriber(top=0)


# --------------------------------------------------------------------------- describer()


def test_describer_specs(monkeypatch):
    assert isinstance(describer(None), LocalDescriber)
    assert isinstance(describer(" Local "), LocalDescriber)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    d = describer("openai:gpt-4.1-mini")
    assert isinstance(d, OpenAIVisionDescriber) and d.model == "gpt-4.1-mini"
    assert describer("OpenAI").model == "gpt-4o-mini"
    monkeypatch.setenv("BILDWERK_DESCRIBER", "openai:from-env")
    assert describer(None).model == "from-env"
    assert isinstance(describer("local"), LocalDescriber)  # an explicit spec wins


@pytest.mark.parametrize("spec", ["blip", "local:big", "azure:west", "openai-vision"])
def test_describer_unknown_spec(spec):
    with pytest.raises(InvalidRequestError) as err:
        describer(spec)
    for choice in ("local", "openai", "openai:MODEL", "azure"):
        assert choice in str(err.value)


# --------------------------------------------------------------------------- merging

CAT = "a photo of a cat"


@pytest.mark.parametrize(("description", "edit", "merged"), [
    (CAT, "make it a watercolor", "a cat, as a watercolor"),
    (CAT, "put the cat on a beach", "a photo of a cat, on a beach"),
    (CAT, "make it a watercolor and put the cat on a beach", "a cat, as a watercolor, on a beach"),
    (CAT, "Please turn it into an oil painting.", "a cat, as an oil painting"),
    (CAT, "could you make it a watercolor please!", "a cat, as a watercolor"),
    (CAT, "draw it in the style of Van Gogh", "a cat, in the style of Van Gogh"),
    (CAT, "make it look like a pencil sketch", "a cat, looking like a pencil sketch"),
    (CAT, "make it darker, then add snow", "a photo of a cat, darker, with snow"),
    (CAT, "make it black and white", "a photo of a cat, black and white"),
    (CAT, "add a hat", "a photo of a cat, with a hat"),
    (CAT, "add a hat to the cat", "a photo of a cat, with a hat on the cat"),
    (CAT, "add a hat to it", "a photo of a cat, with a hat"),
    (CAT, "add a dog next to the cat", "a photo of a cat, with a dog next to the cat"),
    (CAT, "add salt and pepper", "a photo of a cat, with salt and pepper"),
    (CAT, "give it sunglasses", "a photo of a cat, with sunglasses"),
    (CAT, "give the cat a red scarf", "a photo of a cat, with a red scarf"),
    (CAT, "put a hat on the dog", "a photo of a cat, with a hat on the dog"),
    (CAT, "remove the collar from the picture", "a photo of a cat, without the collar"),
    (CAT, "replace the cat with a dog", "a photo of a cat, with a dog instead of the cat"),
    (CAT, "turn the cat into a dog", "a photo of a cat, with a dog instead of the cat"),
    (CAT, "change the background to a beach", "a photo of a cat, with a beach in the background"),
    (CAT, "change the background to white", "a photo of a cat, with a white background"),
    (CAT, "at night", "a photo of a cat, at night"),
    (CAT, "make it a watercolor, make it a watercolor", "a cat, as a watercolor"),
    ("a photo of two cats", "put the cats on a beach", "a photo of two cats, on a beach"),
    ("A tabby cat sleeping on a sofa.", "put it in a forest",
     "A tabby cat sleeping on a sofa, in a forest"),
    ("  a photo of a cat. ", "", "a photo of a cat"),
    (CAT, "   ", CAT),
    ("", "make it a watercolor", "make it a watercolor"),
    ("", "", ""),
])
def test_merge_description(description, edit, merged):
    assert merge_description(description, edit) == merged
    assert merge_description(description, edit) == merged  # deterministic


class FakeChat:
    name = "fake-chat"

    def __init__(self, answer: str | Exception):
        self.answer = answer
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def complete(self, system, user, *, seed=None, max_tokens=128, temperature=0.7):
        self.calls.append((system, user, {"seed": seed, "max_tokens": max_tokens,
                                          "temperature": temperature}))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(("answer", "merged"), [
    ("a watercolor of a cat on a beach", "a watercolor of a cat on a beach"),
    ('Prompt: "a watercolor of a cat on a beach"\nI kept the cat.',
     "a watercolor of a cat on a beach"),
    ("Here is the merged prompt:\n\n**a watercolor of a cat on a beach**",
     "a watercolor of a cat on a beach"),
    ("<think>the user wants...</think>\n  a watercolor   of a cat ", "a watercolor of a cat"),
])
def test_merge_with_llm_cleans_the_answer(answer, merged):
    chat = FakeChat(answer)
    assert merge_with_llm(CAT, "make it a watercolor", chat, seed=7) == merged
    ((system, user, kwargs),) = chat.calls
    assert "one line" in system
    assert CAT in user and "make it a watercolor" in user
    assert kwargs["seed"] == 7


def test_merge_with_llm_failures():
    with pytest.raises(PromptBackendError, match="empty prompt"):
        merge_with_llm(CAT, "make it a watercolor", FakeChat('  ""\n\n'))
    with pytest.raises(PromptBackendError, match="connection reset"):
        merge_with_llm(CAT, "make it a watercolor", FakeChat(RuntimeError("connection reset")))
    with pytest.raises(PromptBackendError, match="own error"):
        merge_with_llm(CAT, "x", FakeChat(PromptBackendError("own error")))
    # An answer that lost the picture's subject is refused like every checked model answer.
    with pytest.raises(PromptAnswerRejected, match="lost the prompt's subject"):
        merge_with_llm(CAT, "make it a watercolor", FakeChat("The legendary king of the sea."))


def test_merge_with_llm_skips_the_model_when_one_side_is_empty():
    chat = FakeChat("unused")
    assert merge_with_llm(CAT, " ", chat) == CAT
    assert merge_with_llm("", "make it a watercolor", chat) == "make it a watercolor"
    assert chat.calls == []


@pytest.mark.parametrize(("language", "edit", "english"), [
    ("fr", "mets le chat sur une plage", "put the cat on a beach"),
    ("fr", "remplace le chat par un chien", "replace the cat with a dog"),
    ("de", "mach es zu einem Aquarell", "turn it into a watercolor"),
    ("de", "entferne das Auto", "remove the car"),
    ("ru", "сделай акварелью", "make it as a watercolor"),
    ("ko", "모자를 추가해 줘", "add hat"),
])
def test_edit_phrasing_in_other_languages_becomes_the_english_instruction(language, edit, english):
    from bildwerk.prompts.describe.merge import edit_in_english

    got = edit_in_english(edit, language)
    assert got.text == english and got.phrases and not got.untranslated
