"""AUTOMATIC1111 /sdapi/v1, OpenAI /v1/images (with the official SDK) and the museum endpoint."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from harness.images import data_url, png_b64, png_bytes
from harness.server import counting_openai_client
from PIL import Image, ImageDraw

from bildwerk.images.metadata import read_png_metadata


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def box_mask() -> Image.Image:
    m = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(m).rectangle((20, 20, 44, 44), fill=255)
    return m


def _img(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


# -- AUTOMATIC1111 ---------------------------------------------------------------------------

def test_a1111_txt2img(server):
    with server.client() as c:
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "a (red:1.2) apple", "negative_prompt": "blurry",
                                              "seed": 11, "steps": 3, "cfg_scale": 5, "width": 64, "height": 64,
                                              "batch_size": 2, "sampler_name": "Euler a",
                                              "some_extension_field": {"x": 1}})
        assert r.status_code == 200, r.text
        body = r.json()
        info = json.loads(body["info"])
        assert len(body["images"]) == 2 and info["all_seeds"] == [11, 12] and info["sampler_name"] == "Euler a"
        assert _img(body["images"][0]).size == (64, 64)
        assert body["parameters"]["prompt"] == "a (red:1.2) apple"
        assert "Seed: 11" in info["infotexts"][0]
        assert r.headers["x-bildwerk-job"] == info["bildwerk_job"]  # the header the museum's answer has
        sent = c.get(f"/api/v1/jobs/{info['bildwerk_job']}").json()["request"]["origin_inputs"]
        assert sent == {"batch_size": 2, "sampler_name": "Euler a", "cfg_scale": 5}  # in A1111's words
        png_info = c.post("/sdapi/v1/png-info", json={"image": body["images"][0]}).json()
        assert png_info["parameters"]["Seed"] == 11 and "Steps: 3" in png_info["info"]


def test_a1111_png_info_decodes_like_every_other_image_field(server, photo):
    png = png_bytes(photo)
    with server.client() as c:
        ok = c.post("/sdapi/v1/png-info", json={"image": data_url(photo)})
        assert ok.status_code == 200, ok.text
        assert ok.json()["info"] == ""  # a plain PNG: no parameters
        # URL-safe, unpadded base64 is accepted as in img2img's fields.
        urlsafe = base64.urlsafe_b64encode(png).decode().rstrip("=")
        assert c.post("/sdapi/v1/png-info", json={"image": urlsafe}).status_code == 200
        for bad in ("data:image/png;base64", "!!!not base64!!!"):
            r = c.post("/sdapi/v1/png-info", json={"image": bad})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "invalid_image"


def test_a1111_img2img_inpaint_options(server, photo, box_mask):
    with server.client() as c:
        inverted = Image.eval(box_mask, lambda v: 255 - v)
        r = c.post("/sdapi/v1/img2img", json={
            "init_images": [png_b64(photo)], "mask": png_b64(inverted), "inpainting_mask_invert": 1,
            "mask_blur": 2, "inpaint_full_res": True, "inpaint_full_res_padding": 8, "denoising_strength": 0.9,
            "prompt": "a lake", "steps": 3, "seed": 1})
        assert r.status_code == 200, r.text
        out = np.asarray(_img(r.json()["images"][0]).convert("RGB"))
        outside = np.asarray(box_mask) == 0
        assert np.array_equal(out[outside], np.asarray(photo)[outside])
        plain = c.post("/sdapi/v1/img2img", json={"init_images": [png_b64(photo)], "prompt": "x", "steps": 3,
                                                   "denoising_strength": 0.5})
        assert plain.status_code == 200 and json.loads(plain.json()["info"])["all_seeds"]


def test_a1111_listings_options_progress_interrupt_interrogate(server, photo):
    with server.client() as c:
        assert any(s["name"] == "DPM++ 2M" for s in c.get("/sdapi/v1/samplers").json())
        assert {s["label"] for s in c.get("/sdapi/v1/schedulers").json()} >= {"Automatic", "Karras"}
        assert c.get("/sdapi/v1/sd-models").json()[0]["title"] == "default"
        assert "sd_model_checkpoint" in c.get("/sdapi/v1/options").json()
        bad = c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"})
        assert bad.status_code == 404
        prog = c.get("/sdapi/v1/progress").json()
        assert 0.0 <= prog["progress"] <= 1.0 and "job_count" in prog["state"]
        assert c.post("/sdapi/v1/interrupt").status_code == 200
        cap = c.post("/sdapi/v1/interrogate", json={"image": png_b64(photo), "model": "clip"})
        assert cap.status_code == 200 and cap.json()["caption"]
        # "default" is the server's model (--model), not bildwerk's embedded one.
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": "default"}).status_code == 200
        info = json.loads(c.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1}).json()["info"])
        assert info["sd_model_name"] == Path(server.model).name
        too_many = c.post("/sdapi/v1/txt2img", json={"prompt": "x", "batch_size": 4, "n_iter": 4})
        assert too_many.status_code == 400 and "batch_size" in too_many.json()["error"]["message"]


# -- OpenAI, with the official SDK ----------------------------------------------------------

def test_openai_sdk_generations(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    raw = client.images.with_raw_response.generate(model="dall-e-2", prompt="a red apple", n=2, size="64x64",
                                                   response_format="b64_json")
    res = raw.parse()
    with server.client() as c:  # the answer names its job, as the museum's does
        job = c.get(f"/api/v1/jobs/{raw.headers['x-bildwerk-job']}").json()
        assert job["api"] == "openai"  # and the model it named, which meant the server's own:
        assert job["request"]["origin_inputs"] == {"model": "dall-e-2", "size": "64x64"}
    assert len(res.data) == 2 and res.data[0].revised_prompt == "a red apple"
    assert _img(res.data[0].b64_json).size == (64, 64)
    url = client.images.generate(prompt="a red apple", size="64x64", response_format="url").data[0].url

    assert httpx.get(url).headers["content-type"] == "image/png"


def test_openai_sdk_edit_with_alpha_mask_and_variation(server, photo, box_mask):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.putalpha(Image.eval(box_mask, lambda v: 255 - v))  # alpha 0 = editable
    res = client.images.edit(image=("in.png", png_bytes(photo), "image/png"),
                             mask=("mask.png", png_bytes(mask), "image/png"), prompt="a lake", n=1, size="64x64")
    out = np.asarray(_img(res.data[0].b64_json).convert("RGB"))
    outside = np.asarray(box_mask) == 0
    assert np.array_equal(out[outside], np.asarray(photo)[outside])
    assert not np.array_equal(out[~outside], np.asarray(photo)[~outside])
    # Without a mask, a local model gets the picture described and merged with the edit (French here).
    edit = client.images.edit(image=("in.png", png_bytes(photo), "image/png"), prompt="en aquarelle", n=1,
                              size="64x64")
    assert edit.data[0].revised_prompt.endswith(", as a watercolor")
    assert edit.data[0].revised_prompt != "en aquarelle"
    var = client.images.create_variation(image=("in.png", png_bytes(photo), "image/png"), n=1, size="64x64")
    assert _img(var.data[0].b64_json).size == (64, 64)
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.edit(image=("in.png", b"not an image", "image/png"), prompt="x")
    assert "image" in str(exc.value)


def test_remote_model_without_key_is_refused_once_before_any_job(server):
    # The SDK as users run it: default retries (408/409/429/5xx). A missing key is the
    # server's configuration: a 4xx at submission, not a 5xx the SDK would send three times.
    if any(os.environ.get(v) for v in ("OPENAI_API_KEY", "BILDWERK_OPENAI_API_KEY")):
        pytest.skip("an OpenAI key in the environment reaches the test server")
    client, sent = counting_openai_client(server.url)
    with server.client() as c:
        before = c.get("/api/v1/jobs").json()["total"]
        with pytest.raises(openai.BadRequestError) as exc:
            client.images.generate(model="openai:gpt-image-1", prompt="a lake", size="1024x1024")
        assert len(sent) == 1 and exc.value.response.headers["x-should-retry"] == "false"
        assert exc.value.code == "not_configured"
        assert "openai:gpt-image-1 needs an OpenAI API key" in exc.value.message
        assert "OPENAI_API_KEY" in exc.value.message
        a1111 = c.post("/sdapi/v1/txt2img", json={
            "prompt": "x", "override_settings": {"sd_model_checkpoint": "openai:dall-e-2"}})
        native = c.post("/api/v1/jobs", json={"prompt": "x", "model": "openai:dall-e-3"})
        for r, model in ((a1111, "openai:dall-e-2"), (native, "openai:dall-e-3")):
            assert r.status_code == 400 and r.json()["error"]["code"] == "not_configured"
            assert f"model {model} needs an OpenAI API key" in r.json()["error"]["message"]
        assert c.get("/api/v1/jobs").json()["total"] == before  # refused before a job was made


def test_image_links_are_refused_as_links_on_every_face(server, box_mask):
    link = "https://example.org/map.png"
    with server.client() as c:
        before = c.get("/api/v1/jobs").json()["total"]
        answers = [
            c.post("/api/v1/museum/inpaint", json={"image": link, "mask": data_url(box_mask), "prompt": "ein See"}),
            c.post("/sdapi/v1/img2img", json={"prompt": "x", "init_images": [link]}),
            c.post("/api/v1/jobs", json={"prompt": "x", "mode": "image-to-image", "image": link}),
        ]
        for r in answers:
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image", r.text
            assert "does not fetch images from links" in r.json()["error"]["message"]
        assert c.get("/api/v1/jobs").json()["total"] == before


# -- the museum ------------------------------------------------------------------------------

def test_museum_inpaint_german_prompt(server, photo, box_mask):
    with server.client() as c:
        r = c.post("/api/v1/museum/inpaint", json={"image": data_url(photo), "mask": data_url(box_mask),
                                                   "prompt": "ein See", "text_fidelity": 0.7, "seed": 5,
                                                   "steps": 3})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        out = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
        outside = np.asarray(box_mask) == 0
        assert np.array_equal(out[outside], np.asarray(photo)[outside])
        job = c.get(f"/api/v1/jobs/{r.headers['x-bildwerk-job']}").json()
        assert job["api"] == "museum" and set(job["inputs"]) == {"image", "mask"}
        rec = job["record"]["request"]["prompt_record"]
        assert rec["original"] == "ein See" and rec["prompt"].startswith("a lake, ")
        assert job["record"]["guidance"] > 7.5  # fidelity 0.7 is above the recommendation
        meta = read_png_metadata(r.content)
        assert meta["record"]["request"]["prompt_record"]["language"] == "de"
        # What the visitor chose, in the museum's words, beside the guidance it became.
        sent = {"model": "local", "text_fidelity": 0.7}
        assert job["request"]["origin_inputs"] == sent and job["record"]["request"]["origin_inputs"] == sent
        assert meta["record"]["request"]["origin_inputs"] == sent
        bad = c.post("/api/v1/museum/inpaint", json={"image": data_url(photo), "mask": "data:image/png;base64,AAAA",
                                                     "prompt": "ein See"})
        assert bad.status_code == 400


def test_guidance_for_fidelity():
    from bildwerk.server.routes_museum import guidance_for_fidelity

    assert guidance_for_fidelity(0.0, 7.5) == 1.0
    assert guidance_for_fidelity(0.5, 7.5) == 7.5
    assert guidance_for_fidelity(1.0, 4.0) == 8.0
