"""ControlNet over REST through the real server: sd-webui-controlnet's alwayson_scripts shape on
/sdapi/v1, its /controlnet endpoints, and the native body field, each job through the queue
and store (the control picture kept as an input blob and given back to the worker)."""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
from harness.images import png_b64
from harness.server import wait_job
from PIL import Image, ImageDraw


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    im = Image.new("RGB", (64, 64), (240, 240, 240))
    ImageDraw.Draw(im).rectangle((10, 10, 44, 44), fill=(10, 10, 10))
    return im


@pytest.fixture(scope="module")
def cn_server(server, tiny_controlnets):
    folder = server.root / "home" / "controlnet"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny_controlnets["cn-sd-file.safetensors"], folder / "control_tiny_canny.safetensors")
    return server


def _pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _unit(picture, **kw):
    return {"enabled": True, "module": "canny", "model": "control_tiny_canny [d14c016b]", "weight": 1.0,
            "image": png_b64(picture), "guidance_start": 0.0, "guidance_end": 1.0, "threshold_a": 100,
            "threshold_b": 200, "processor_res": 512, "resize_mode": "Crop and Resize",
            "control_mode": "Balanced", "pixel_perfect": False, "low_vram": False, **kw}


def test_controlnet_endpoints(cn_server, picture):
    with cn_server.client() as c:
        assert "control_tiny_canny" in c.get("/controlnet/model_list").json()["model_list"]
        assert {"none", "canny", "scribble"} <= set(c.get("/controlnet/module_list").json()["module_list"])
        r = c.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": [png_b64(picture)],
                                               "controlnet_threshold_a": 100, "controlnet_threshold_b": 200})
        assert r.status_code == 200, r.text
        edges = _pixels(r.json()["images"][0])
        assert edges[8:12, 20].max() == 255 and edges[30, 30].max() == 0  # the square's border, not its inside
        r = c.post("/controlnet/detect", json={"controlnet_module": "depth_midas", "controlnet_input_images": [png_b64(picture)]})
        assert r.status_code == 400 and "depth_midas" in r.text
        r = c.post("/controlnet/detect", json={"controlnet_module": "none", "controlnet_input_images": [""]})
        assert r.status_code == 400 and "controlnet_input_images[0] is empty" in r.text  # was a 500 (fuzz)


def test_a1111_alwayson_controlnet_txt2img_and_img2img(cn_server, picture):
    base = {"prompt": "a house", "seed": 5, "steps": 2, "width": 64, "height": 64}
    with cn_server.client() as c:
        plain = c.post("/sdapi/v1/txt2img", json=base)
        steered = c.post("/sdapi/v1/txt2img", json={**base, "alwayson_scripts": {"controlnet": {"args": [
            _unit(picture), {"enabled": False, "model": "None"}]}}})
        assert plain.status_code == 200 and steered.status_code == 200, steered.text
        assert not np.array_equal(_pixels(plain.json()["images"][0]), _pixels(steered.json()["images"][0]))
        job = c.get(f"/api/v1/jobs/{json.loads(steered.json()['info'])['bildwerk_job']}").json()
        unit = job["record"]["request"]["controls"][0]
        assert unit["model"] == "control_tiny_canny" and unit["preprocessor"] == "canny"
        assert "control0" in job["inputs"]  # the control picture, kept with the job
        img = c.post("/sdapi/v1/img2img", json={**base, "init_images": [png_b64(picture)], "denoising_strength": 0.8,
                                                "alwayson_scripts": {"controlnet": {"args": [
                                                    {**_unit(picture, module="none"), "image": None}]}}})
        assert img.status_code == 200, img.text  # the unit took the init image
        bad = c.post("/sdapi/v1/txt2img", json={**base, "alwayson_scripts": {"controlnet": {"args": [
            _unit(picture, module="openpose_full")]}}})
        assert bad.status_code == 400 and "openpose_full" in bad.text
        missing = c.post("/sdapi/v1/txt2img", json={**base, "alwayson_scripts": {"controlnet": {"args": [
            _unit(picture, model="control_nowhere [12345678]")]}}})
        assert missing.status_code == 404 and "control_nowhere" in missing.text


def test_native_controls_through_the_queue(cn_server, picture):
    with cn_server.client() as c:
        r = c.post("/api/v1/jobs", json={"prompt": "a house", "seed": 3, "steps": 2, "width": 64, "height": 64,
                                         "controls": [{"model": "control_tiny_canny", "image": png_b64(picture),
                                                       "preprocessor": "scribble", "scale": 0.8, "end": 0.5}]})
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["id"])
        assert job["status"] == "succeeded", job
        unit = job["record"]["request"]["controls"][0]
        assert (unit["preprocessor"], unit["scale"], unit["end"]) == ("scribble", 0.8, 0.5)
        assert job["inputs"]["control0"]["sha256"] and len(unit["image_sha256"]) == 64
        assert any("ControlNet control_tiny_canny" in n for n in job["record"]["notes"])
        bad = c.post("/api/v1/jobs", json={"prompt": "x", "controls": [{"model": "control_tiny_canny"}]})
        assert bad.status_code == 400
