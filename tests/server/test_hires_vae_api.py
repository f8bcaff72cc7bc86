"""Hires fix and the VAE override through a real server: A1111's enable_hr and sd_vae, the
native body's hires and vae, and the lists A1111 clients read."""

from __future__ import annotations

import base64
import io
import json

import torch
from harness.images import png_b64
from PIL import Image


def _img(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _write_vae(server, name: str) -> None:
    """A tiny VAE with other random weights in the server's own VAE folder (read per request)."""
    from safetensors.torch import save_file

    from bildwerk.models.tiny import _vae

    folder = server.root / "home" / "vae"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(321)
    save_file(_vae().state_dict(), str(folder / f"{name}.safetensors"))


def test_a1111_enable_hr_with_an_sd_vae_override(server):
    _write_vae(server, "api-vae")
    with server.client() as c:
        r = c.post("/sdapi/v1/txt2img", json={
            "prompt": "a lake", "seed": 5, "steps": 2, "width": 64, "height": 64, "enable_hr": True,
            "hr_scale": 1.5, "hr_upscaler": "Latent (bicubic)", "denoising_strength": 0.5,
            "hr_second_pass_steps": 2, "override_settings": {"sd_vae": "api-vae"}})
        assert r.status_code == 200, r.text
        body = r.json()
        info = json.loads(body["info"])
        assert _img(body["images"][0]).size == (96, 96)
        assert (info["width"], info["height"]) == (96, 96)
        text = info["infotexts"][0]
        assert "Size: 64x64" in text and "Hires upscale: 1.5" in text and "Hires upscaler: Latent (bicubic)" in text
        assert "VAE: api-vae" in text
        job = c.get(f"/api/v1/jobs/{info['bildwerk_job']}").json()
        details = job["record"]["details"]
        assert details["hires"]["first_size"] == [64, 64] and details["hires"]["upscaler"] == "latent-bicubic"
        assert details["vae"]["name"] == "api-vae"
        assert job["request"]["origin_inputs"]["hr_upscaler"] == "Latent (bicubic)"

        ups = {u["name"] for u in c.get("/sdapi/v1/upscalers").json()}
        assert {"None", "Lanczos", "Nearest"} <= ups
        assert "Latent (nearest-exact)" in {m["name"] for m in c.get("/sdapi/v1/latent-upscale-modes").json()}
        assert "api-vae" in {v["model_name"] for v in c.get("/sdapi/v1/sd-vae").json()}

        # The sd_vae option: checked when set, shown by GET /options, reset by "Automatic".
        assert c.post("/sdapi/v1/options", json={"sd_vae": "no-such-vae"}).status_code == 404
        assert c.post("/sdapi/v1/options", json={"sd_vae": "api-vae"}).status_code == 200
        assert c.get("/sdapi/v1/options").json()["sd_vae"] == "api-vae"
        assert c.post("/sdapi/v1/options", json={"sd_vae": "Automatic"}).status_code == 200
        assert c.get("/sdapi/v1/options").json()["sd_vae"] == "Automatic"


def test_bad_hires_and_vae_requests_are_400_or_404_at_submission(server):
    with server.client() as c:
        bad = c.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "enable_hr": True,
                                                "hr_upscaler": "R-ESRGAN 4x+"})
        assert bad.status_code == 400 and "ESRGAN" in bad.text
        big = c.post("/api/v1/jobs", json={"prompt": "x", "width": 1536, "height": 1536, "hires": {"scale": 2}})
        assert big.status_code == 400 and "2048" in big.text
        typed = c.post("/api/v1/jobs", json={"prompt": "x", "hires": {"scale": 2, "steps": "3"}})
        assert typed.status_code == 400
        i2i = c.post("/api/v1/jobs", json={"prompt": "x", "mode": "image-to-image", "hires": {"scale": 2},
                                           "image": png_b64(Image.new("RGB", (64, 64)))})
        assert i2i.status_code == 400 and "text-to-image" in i2i.text
        missing = c.post("/api/v1/jobs", json={"prompt": "x", "vae": "no-such-vae"})
        assert missing.status_code == 404 and "asset_not_found" in missing.text
