"""OpenAIImagesEngine through the official SDK against the loopback OpenAI stand-in."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import numpy as np
import openai
import pytest
from fakes.openai_server import FakeOpenAIServer, ImageCall, editable_area
from PIL import Image

from bildwerk.core.errors import (
    BildwerkError,
    GenerationCancelled,
    InvalidRequestError,
    RemoteAuthError,
    RemoteError,
    RemoteRateLimited,
    RemoteTimeout,
)
from bildwerk.core.request import build_request
from bildwerk.engines.openai_engine import (
    OpenAIImagesEngine,
    closest_size,
    is_remote_model,
    model_spec,
    remote_model_name,
    retry_after_seconds,
)
from bildwerk.images.masks import feather_mask, normalize_mask
from bildwerk.images.metadata import read_png_metadata

KEY = "sk-test-images-0123456789"


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch):
    # The developer's own keys and endpoints must not leak into (or reach out from) tests.
    for var in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "BILDWERK_OPENAI_API_KEY",
        "BILDWERK_OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    with FakeOpenAIServer(required_key=KEY) as s:
        yield s


def engine_for(server: FakeOpenAIServer, **kw) -> OpenAIImagesEngine:
    return OpenAIImagesEngine(api_key=KEY, base_url=server.base_url, **kw)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def request(model: str):
    return build_request(prompt="x", model=model)


def image_requests(server: FakeOpenAIServer) -> list:
    return [r for r in server.requests if r.path.startswith("/v1/images/")]


# --------------------------------------------------------------------------- helpers


def test_remote_model_helpers():
    assert is_remote_model("openai:dall-e-2")
    assert is_remote_model(" OpenAI:gpt-image-1 ")
    assert not is_remote_model(None)
    assert not is_remote_model("runwayml/stable-diffusion-v1-5")
    assert not is_remote_model("/models/openai")
    assert remote_model_name("openai:DALL-E-3") == "dall-e-3"
    with pytest.raises(InvalidRequestError, match="names no model"):
        remote_model_name("openai:")
    with pytest.raises(InvalidRequestError, match="not a remote model"):
        remote_model_name("sd-tiny")
    assert model_spec("gpt-image-1-mini").family == "gpt-image"
    with pytest.raises(InvalidRequestError, match="dall-e-2"):
        model_spec("whisper-1")


@pytest.mark.parametrize(
    ("model", "wanted", "expected"),
    [
        ("dall-e-2", (512, 768), (512, 512)),
        ("dall-e-2", (256, 256), (256, 256)),
        ("dall-e-2", (1024, 2048), (1024, 1024)),
        ("dall-e-3", (512, 512), (1024, 1024)),
        ("dall-e-3", (1024, 576), (1792, 1024)),
        ("dall-e-3", (576, 1024), (1024, 1792)),
        ("gpt-image-1", (768, 512), (1536, 1024)),
        ("gpt-image-1", (640, 480), (1536, 1024)),
        ("gpt-image-1", (512, 576), (1024, 1024)),
        ("gpt-image-1", (512, 640), (1024, 1536)),
        ("gpt-image-1", (512, 768), (1024, 1536)),
    ],
)
def test_closest_size_prefers_aspect_then_area(model, wanted, expected):
    assert closest_size(model_spec(model).sizes, wanted) == expected


def test_retry_after_parsing():
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": "0.25"}) == 0.25
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds({"retry-after": when}) <= 31
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert retry_after_seconds(None) is None


# --------------------------------------------------------------------------- text-to-image


def test_text_to_image_dall_e_2_size_mapping_and_resize(server):
    events = []
    req = build_request(
        prompt="a lighthouse", model="openai:dall-e-2", width=512, height=768, num_images=2,
        seed=41,
    )
    result = engine_for(server).generate(req, on_progress=events.append)

    [call] = image_requests(server)
    assert call.path == "/v1/images/generations"
    assert call.header("authorization") == f"Bearer {KEY}"
    assert call.json == {
        "model": "dall-e-2", "prompt": "a lighthouse", "n": 2, "size": "512x512",
        "response_format": "b64_json",
    }
    assert [im.size for im in result.images] == [(512, 768), (512, 768)]
    assert all(im.mode == "RGB" for im in result.images)
    assert (result.width, result.height) == (512, 768)
    assert result.seeds == [41, 42]
    assert result.model == {"name": "openai:dall-e-2", "family": "remote", "ref": "openai:dall-e-2"}
    assert result.scheduler == "remote" and result.guidance == 0.0
    assert any("remote size 512x512 (dall-e-2)" in n for n in result.notes)
    assert {"load", "remote", "total"} <= set(result.timings)
    assert [e.phase for e in events] == ["load", "done"]
    assert (events[0].step, events[0].total) == (0, 1)


def test_weights_are_removed_from_the_remote_prompt(server):
    req = build_request(prompt="a (red:1.3) [old] lighthouse", model="openai:dall-e-2", width=256, height=256)
    result = engine_for(server).generate(req)
    [call] = image_requests(server)
    assert call.json["prompt"] == "a red old lighthouse"
    assert any("weights removed" in n for n in result.notes)


def test_text_to_image_dall_e_3_loops_one_image_per_call(server):
    req = build_request(prompt="a fjord", model="openai:dall-e-3", width=1024, height=576,
                        num_images=2, guidance=5.0)
    result = engine_for(server).generate(req)

    calls = image_requests(server)
    assert len(calls) == 2
    for call in calls:
        assert call.json["n"] == 1 and call.json["size"] == "1792x1024"
        assert call.json["response_format"] == "b64_json"
    assert [im.size for im in result.images] == [(1024, 576)] * 2
    assert result.guidance == 5.0
    assert "dall-e-3 makes one image per call: 2 calls" in result.notes
    assert "OpenAI revised the prompt: a fjord, in more words" in result.notes
    assert any("guidance not used" in n for n in result.notes)


def test_text_to_image_gpt_image_sends_no_response_format(server):
    req = build_request(prompt="a map", model="openai:gpt-image-1", width=768, height=512)
    result = engine_for(server).generate(req)

    [call] = image_requests(server)
    assert call.json["size"] == "1536x1024" and "response_format" not in call.json
    assert result.images[0].size == (768, 512)
    assert "remote size 1536x1024 (gpt-image-1), resized to 768x512" in result.notes


def test_text_to_image_default_size_is_the_native_one(server):
    result = engine_for(server).generate(build_request(prompt="x", model="openai:gpt-image-1"))
    assert image_requests(server)[0].json["size"] == "1024x1024"
    assert result.images[0].size == (1024, 1024)


def test_fake_rejects_what_the_real_api_rejects(server):
    # The engine's choices above matter: the stand-in refuses what OpenAI refuses.
    client = openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.images.generate(model="gpt-image-1", prompt="x", response_format="b64_json")
    with pytest.raises(openai.BadRequestError, match="n=1"):
        client.images.generate(model="dall-e-3", prompt="x", n=2)
    with pytest.raises(openai.BadRequestError, match="Invalid size"):
        client.images.generate(model="dall-e-2", prompt="x", size="1536x1024")


# --------------------------------------------------------------------------- inpaint

SIDE = 256


def _change_region() -> np.ndarray:
    change = np.zeros((SIDE, SIDE), dtype=bool)
    change[40:120, 60:150] = True
    change[180:200, 20:230] = True  # a second, thin stroke
    return change


def _mask_in(convention: str, change: np.ndarray) -> tuple[Image.Image, dict]:
    """The same change area as each face of bildwerk may receive it."""
    if convention == "white":
        return Image.fromarray(change.astype(np.uint8) * 255, "L"), {}
    if convention == "alpha":
        rgba = np.full((SIDE, SIDE, 4), 255, dtype=np.uint8)
        rgba[..., 3] = np.where(change, 0, 255)
        return Image.fromarray(rgba, "RGBA"), {"mask_source": "alpha"}
    if convention == "alpha-auto":
        rgba = np.zeros((SIDE, SIDE, 4), dtype=np.uint8)
        rgba[..., 3] = np.where(change, 0, 255)
        return Image.fromarray(rgba, "RGBA"), {}
    if convention == "invert":
        return Image.fromarray((~change).astype(np.uint8) * 255, "L"), {"invert_mask": True}
    raise AssertionError(convention)


@pytest.mark.parametrize("convention", ["white", "alpha", "alpha-auto", "invert"])
def test_inpaint_keeps_unmasked_pixels_bit_exact(server, convention):
    image = photo(SIDE, SIDE)
    change = _change_region()
    mask, options = _mask_in(convention, change)
    req = build_request(
        mode="inpaint", prompt="a boat", model="openai:dall-e-2", image=image, mask=mask,
        only_masked=False, mask_blur=4, **options,
    )
    result = engine_for(server).generate(req)

    [call] = image_requests(server)
    assert call.path == "/v1/images/edits"
    assert call.form["prompt"] == "a boat" and call.form["size"] == f"{SIDE}x{SIDE}"
    assert call.form["response_format"] == "b64_json"
    sent_image = call.files["image"].image()
    sent_mask = call.files["mask"].image()
    assert sent_image.mode == "RGBA" and sent_mask.mode == "RGBA"  # what dall-e-2 demands
    assert np.array_equal(np.asarray(sent_image.convert("RGB")), np.asarray(image))
    # OpenAI's convention: transparent exactly where bildwerk's mask says "change".
    assert np.array_equal(editable_area(sent_mask), change)

    out = np.asarray(result.images[0])
    original = np.asarray(image)
    assert result.images[0].size == image.size
    assert np.array_equal(out[~change], original[~change])
    # Inside the mask (past the feather) is the remote answer: the fake inverts every pixel.
    alpha = np.asarray(feather_mask(normalize_mask(mask, **_norm(options)), 4))
    full = alpha == 255
    assert full.sum() > 1000
    assert np.array_equal(out[full], 255 - original[full])
    assert any("composited locally" in n for n in result.notes)


def _norm(options: dict) -> dict:
    return {
        "source": options.get("mask_source", "auto"),
        "invert": options.get("invert_mask", False),
    }


def test_gpt_image_inpaint_whole_canvas_repaint_is_composited_back(server):
    # gpt-image edits repaint everything; the composite must undo that outside the mask.
    image = photo(1024, 1024, seed=3)
    change = np.zeros((1024, 1024), dtype=bool)
    change[300:500, 200:700] = True
    mask = Image.fromarray(change.astype(np.uint8) * 255, "L")
    req = build_request(mode="inpaint", prompt="a kite", model="openai:gpt-image-1",
                        image=image, mask=mask, only_masked=False)
    result = engine_for(server).generate(req)

    [call] = image_requests(server)
    assert "response_format" not in call.form and call.form["size"] == "1024x1024"
    assert np.array_equal(editable_area(call.files["mask"].image()), change)
    [drawn] = server.image_calls
    answer = np.asarray(server.image_responder(drawn))
    original = np.asarray(image)
    assert (answer != original).all(axis=-1).all()  # the fake changed every pixel
    out = np.asarray(result.images[0])
    assert np.array_equal(out[~change], original[~change])
    assert not np.array_equal(out[change], original[change])


def test_inpaint_only_masked_on_non_square_image_for_dall_e_2(server):
    image = photo(320, 200, seed=5)
    change = np.zeros((200, 320), dtype=bool)
    change[70:110, 140:190] = True
    mask = Image.fromarray(change.astype(np.uint8) * 255, "L")
    req = build_request(mode="inpaint", prompt="a bird", model="openai:dall-e-2",
                        image=image, mask=mask)  # only_masked is the default
    result = engine_for(server).generate(req)

    [call] = image_requests(server)
    sent_image, sent_mask = call.files["image"].image(), call.files["mask"].image()
    assert sent_image.width == sent_image.height  # dall-e-2 takes squares only
    assert sent_mask.size == sent_image.size
    editable = editable_area(sent_mask)
    assert 0 < editable.sum() < editable.size
    out = np.asarray(result.images[0])
    assert result.images[0].size == (320, 200)
    assert np.array_equal(out[~change], np.asarray(image)[~change])
    assert not np.array_equal(out[change], np.asarray(image)[change])
    assert any(n.startswith("inpainted region") for n in result.notes)


def test_gpt_image_inpaint_letterboxes_a_clamped_crop(server):
    # A mask spanning the image's width: the crop cannot take the canvas' aspect, so the
    # picture is letterboxed (bars are "keep") and cut back out of the answer.
    image = photo(640, 200, seed=9)
    change = np.zeros((200, 640), dtype=bool)
    change[50:150, 10:630] = True
    mask = Image.fromarray(change.astype(np.uint8) * 255, "L")
    req = build_request(mode="inpaint", prompt="a wave", model="openai:gpt-image-1",
                        image=image, mask=mask, only_masked_padding=0)
    result = engine_for(server).generate(req)

    [call] = image_requests(server)
    sent_mask = call.files["mask"].image()
    assert sent_mask.size == (1536, 1024)
    editable = editable_area(sent_mask)
    assert not editable[:100].any() and not editable[-100:].any()  # the bars stay
    out = np.asarray(result.images[0])
    assert np.array_equal(out[~change], np.asarray(image)[~change])
    assert any("letterboxed" in n for n in result.notes)


def test_inpaint_with_empty_mask_returns_the_image_without_a_call():
    image = photo(64, 64)
    req = build_request(mode="inpaint", prompt="x", model="openai:gpt-image-1", image=image,
                        mask=Image.new("L", (64, 64), 0), num_images=2)
    # No key and no server: a remote call would fail, so none was made.
    result = OpenAIImagesEngine().generate(req)
    assert all(np.array_equal(np.asarray(im), np.asarray(image)) for im in result.images)
    assert "mask is empty; image returned unchanged" in result.notes


# --------------------------------------------------------------------------- image-to-image


def test_image_to_image_dall_e_2_is_a_variation_without_prompt(server):
    image = photo(320, 240, seed=1)
    req = build_request(mode="image-to-image", prompt="ignored words", model="openai:dall-e-2",
                        image=image, num_images=3)
    result = engine_for(server).generate(req)

    [call] = image_requests(server)
    assert call.path == "/v1/images/variations"
    assert "prompt" not in call.form
    assert call.form["n"] == "3" and call.form["size"] == "256x256"
    sent = call.files["image"].image()
    assert sent.size == (256, 256) and sent.mode == "RGBA"
    assert [im.size for im in result.images] == [(320, 240)] * 3
    assert any("take no prompt" in n for n in result.notes)
    assert any("strength not used" in n for n in result.notes)


def test_image_to_image_gpt_image_is_an_edit_without_mask(server):
    image = photo(480, 320, seed=2)
    req = build_request(mode="image-to-image", prompt="as a watercolour",
                        model="openai:gpt-image-1", image=image, width=512, height=512)
    result = engine_for(server).generate(req)

    [call] = image_requests(server)
    assert call.path == "/v1/images/edits"
    assert call.form["prompt"] == "as a watercolour" and "mask" not in call.files
    assert call.form["size"] == "1024x1024"
    assert result.images[0].size == (512, 512)


@pytest.mark.parametrize("mode", ["image-to-image", "inpaint"])
def test_dall_e_3_cannot_start_from_an_image(server, mode):
    extra = {"mask": Image.new("L", (64, 64), 255)} if mode == "inpaint" else {}
    req = build_request(mode=mode, prompt="x", model="openai:dall-e-3", image=photo(64, 64),
                        **extra)
    with pytest.raises(InvalidRequestError) as info:
        engine_for(server).generate(req)
    assert "dall-e-2" in str(info.value) and "gpt-image-1" in str(info.value)
    assert not server.requests


# --------------------------------------------------------------------------- errors


def test_rate_limit_then_success_honours_retry_after(server):
    server.fail_next(1, 429, headers={"Retry-After": "0.01"}, message="slow down")
    start = time.monotonic()
    result = engine_for(server, max_retries=2).generate(
        build_request(prompt="x", model="openai:dall-e-2", width=256, height=256)
    )
    # Retry-After (0.01 s) was honoured instead of the SDK's 0.5 s+ backoff.
    assert time.monotonic() - start < 0.45
    assert len(result.images) == 1
    assert [r.header("x-stainless-retry-count") for r in server.requests] == ["0", "1"]


def test_persistent_rate_limit_carries_retry_after(server):
    server.fail_next(5, 429, headers={"Retry-After": "7"}, message="quota exceeded")
    with pytest.raises(RemoteRateLimited) as info:
        engine_for(server, max_retries=0).generate(request("openai:dall-e-2"))
    err = info.value
    assert err.code == "remote_rate_limited" and isinstance(err, BildwerkError)
    assert err.retry_after == 7.0
    assert "quota exceeded" in str(err) and "429" in str(err)


def test_wrong_key_is_an_auth_error_that_names_the_variable_not_the_key(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-secret-key-42")
    monkeypatch.setenv("BILDWERK_OPENAI_BASE_URL", server.base_url)
    engine = OpenAIImagesEngine(max_retries=0)
    with pytest.raises(RemoteAuthError) as info:
        engine.generate(build_request(prompt="x", model="openai:dall-e-2"))
    message = str(info.value)
    assert info.value.code == "remote_auth"
    assert "401" in message and "OPENAI_API_KEY" in message
    assert "sk-wrong-secret-key-42" not in message and "sk-wrong-secret-key-42" not in repr(engine)


def test_permission_denied_is_an_auth_error(server):
    server.fail_next(1, 403, message="Your organization must be verified to use gpt-image-1.")
    with pytest.raises(RemoteAuthError, match="must be verified") as info:
        engine_for(server, max_retries=0).generate(request("openai:gpt-image-1"))
    assert KEY not in str(info.value)


def test_timeout_is_a_remote_timeout(server):
    server.delay_next(3.0)
    engine = engine_for(server, timeout=0.3, max_retries=0)
    start = time.monotonic()
    with pytest.raises(RemoteTimeout) as info:
        engine.generate(build_request(prompt="x", model="openai:dall-e-2"))
    assert time.monotonic() - start < 2.5
    assert info.value.code == "remote_timeout" and "0.3 s" in str(info.value)


def test_content_policy_refusal_is_an_invalid_request_with_openai_message(server):
    server.fail_next(1, 400, message="Your request was rejected as a result of our safety system.")
    with pytest.raises(InvalidRequestError, match="safety system"):
        engine_for(server, max_retries=0).generate(request("openai:dall-e-3"))


def test_server_error_and_unreachable_endpoint_are_remote_errors(server):
    server.fail_next(3, 500, headers={"retry-after-ms": "1"}, message="the GPU fell over")
    with pytest.raises(RemoteError, match="HTTP 500.*the GPU fell over") as info:
        engine_for(server, max_retries=1).generate(request("openai:dall-e-2"))
    assert info.value.code == "remote_error"

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = OpenAIImagesEngine(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(RemoteError, match="could not be reached"):
        engine.generate(build_request(prompt="x", model="openai:dall-e-2"))


def test_missing_key_is_a_clear_error_at_generate_time():
    engine = OpenAIImagesEngine()  # constructing needs no key
    with pytest.raises(RemoteAuthError) as info:
        engine.generate(build_request(prompt="x", model="openai:gpt-image-1"))
    assert "BILDWERK_OPENAI_API_KEY" in str(info.value) and "OPENAI_API_KEY" in str(info.value)


def test_environment_key_and_base_url(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-this-one")
    monkeypatch.setenv("BILDWERK_OPENAI_API_KEY", KEY)  # wins over OPENAI_API_KEY
    monkeypatch.setenv("BILDWERK_OPENAI_BASE_URL", server.base_url)
    OpenAIImagesEngine().generate(build_request(prompt="x", model="openai:dall-e-2", width=256,
                                                height=256))
    assert server.requests[0].header("authorization") == f"Bearer {KEY}"


def test_injected_client_is_used(server):
    client = openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=0)
    result = OpenAIImagesEngine(client=client).generate(
        build_request(prompt="x", model="openai:dall-e-2", width=256, height=256)
    )
    assert len(result.images) == 1 and len(server.requests) == 1


class _CancelAfter:
    def __init__(self, checks: int) -> None:
        self.left = checks

    def is_set(self) -> bool:
        self.left -= 1
        return self.left < 0


def test_cancel_is_honoured_before_each_remote_call(server):
    engine = engine_for(server)
    req = build_request(prompt="x", model="openai:dall-e-3", num_images=3)
    with pytest.raises(GenerationCancelled):
        engine.generate(req, cancel=_CancelAfter(0))
    assert not server.requests
    with pytest.raises(GenerationCancelled, match="call 2 of 3"):
        engine.generate(req, cancel=_CancelAfter(1))
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- record


def test_notes_metadata_and_custom_responder():
    def red(call: ImageCall) -> Image.Image:
        return Image.new("RGB", (call.width, call.height), (200, 10, 10))

    with FakeOpenAIServer(required_key=KEY, image_responder=red) as server:
        req = build_request(
            prompt="ein Leuchtturm", negative_prompt="blurry", model="openai:gpt-image-1",
            width=512, height=512, steps=30, seed=1234,
        )
        result = engine_for(server).generate(req)

    assert result.images[0].getpixel((10, 10)) == (200, 10, 10)
    notes = " | ".join(result.notes)
    assert "takes no seed" in notes and "cannot be reproduced" in notes
    assert "negative prompt not sent" in notes
    assert "steps not used" in notes
    assert "negative" not in str(server.requests[0].json)

    meta = read_png_metadata(result.png_bytes(0))
    record = meta["record"]
    assert record["model"]["name"] == "openai:gpt-image-1"
    assert record["model"]["family"] == "remote"
    assert record["seed"] == 1234 and record["scheduler"] == "remote"
    assert record["notes"] == result.notes
    assert record["request"]["model"] == "openai:gpt-image-1"
    assert meta["parsed"]["prompt"] == "ein Leuchtturm"
    assert meta["parsed"]["negative_prompt"] == "blurry"
