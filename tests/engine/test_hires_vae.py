"""Hires fix (a second pass at a larger size) and the VAE override, on the tiny SD model.

Every feature must change the picture and say so in the record; a hires job batched with
others gives the same pixels as alone; bad VAE files fail with one clear error.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from bildwerk.app.batching import ContinuousBatcher
from bildwerk.app.generate import Generator
from bildwerk.core.errors import InvalidRequestError, UnsafeModelError, UnsupportedModelError
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.spec import JobSpec
from bildwerk.models.assets import AssetNotFoundError

OFF = PromptOptions(wildcards=False, translate="off")


@pytest.fixture(scope="module")
def generator(engine):
    return Generator(models=engine.models)


def _spec(model, **kw) -> JobSpec:
    fields = dict(prompt="a lake", seed=7, steps=2, width=64, height=64) | kw
    return JobSpec.build(model=str(model), options=OFF, origin="python", **fields)


def _px(result) -> list[np.ndarray]:
    return [np.asarray(im) for im in result.images]


# Hires: first pass 64 px, second pass 96 px (1.5x), strength 0.5: one or two more steps.
LATENT = {"scale": 1.5, "strength": 0.5}
LANCZOS = {"scale": 1.5, "strength": 0.5, "upscaler": "Lanczos", "steps": 4}


@pytest.fixture(scope="module")
def runs(generator, tiny_models):
    """The plain picture and the hires ones, each run alone once (shared by the tests)."""
    sd = tiny_models["sd"]
    out = {}
    for name, hires in (("plain", None), ("latent", LATENT), ("lanczos", LANCZOS)):
        events = []
        result = generator.run(_spec(sd, hires=hires), on_progress=events.append)
        out[name] = (result, events)
    return out


def test_hires_makes_a_larger_refined_picture_and_records_it(runs):
    plain, _ = runs["plain"]
    latent, events = runs["latent"]
    lanczos, lz_events = runs["lanczos"]
    assert plain.images[0].size == (64, 64)
    assert latent.images[0].size == lanczos.images[0].size == (96, 96)
    assert (latent.width, latent.height) == (96, 96)
    # Not a plain resize of the first picture: the second pass repainted it.
    resized = np.asarray(plain.images[0].resize((96, 96), Image.LANCZOS), dtype=np.int16)
    assert np.abs(np.asarray(lanczos.images[0], dtype=np.int16) - resized).mean() > 1
    assert not np.array_equal(_px(latent)[0], _px(lanczos)[0])  # the upscalers differ
    rec = latent.record(0)
    assert rec["details"]["hires"]["first_size"] == [64, 64]
    assert rec["details"]["hires"]["size"] == [96, 96]
    assert rec["details"]["hires"]["upscaler"] == "latent"
    assert rec["request"]["hires"]["scale"] == 1.5
    assert any("first pass at 64x64" in n for n in latent.notes)
    text = latent.parameters_text(0)
    assert "Size: 64x64" in text and "Hires upscale: 1.5" in text and "Hires upscaler: Latent" in text
    assert "Denoising strength: 0.5" in text
    # Progress counts both passes: 2 first-pass steps, then round(2 x 0.5) = 1; with its own
    # 4 steps the Lanczos pass runs round(4 x 0.5) = 2 (second_pass_steps respected).
    denoise = [(e.step, e.total, e.pass_index) for e in events if e.phase == "denoise"]
    assert denoise == [(1, 3, 1), (2, 3, 2), (3, 3, 2)]  # the 2nd step ends pass 1, starts pass 2
    assert [(e.step, e.total) for e in lz_events if e.phase == "denoise"][-1] == (4, 4)
    assert lanczos.record()["details"]["hires"]["denoising_steps"] == 2
    assert "hires_upscale" in lanczos.timings


def test_hires_alone_equals_batched(generator, tiny_models, runs, vae_file):
    """Hires jobs change shape mid-job and regroup; a VAE job decodes with its own VAE, next to
    jobs with the model's: every picture is bit-identical to its run alone."""
    sd = tiny_models["sd"]
    specs = {"latent": _spec(sd, hires=LATENT), "plain": _spec(sd), "lanczos": _spec(sd, hires=LANCZOS),
             "vae": _spec(sd, vae="other-vae")}
    alone = {k: _px(v[0]) for k, v in runs.items()}
    alone["vae"] = _px(generator.run(specs["vae"]))
    batcher = ContinuousBatcher(max_rows=64)
    together: dict[str, list[np.ndarray]] = {}
    groups = []
    pending = list(specs.items())
    while pending or len(batcher):
        if pending:  # one joins per turn: the first hires job changes shape while others still run
            key, spec = pending.pop(0)
            batcher.add(key, generator.start(spec))
        groups.append(len({s.task.prepared.batch_key for s in batcher.slots}))
        for o in batcher.step():
            assert o.error is None, o.error
            together[o.key] = _px(o.result)
    assert max(groups) >= 2  # hires jobs moved to their own shape's group
    for key, pictures in alone.items():
        assert all(np.array_equal(a, b) for a, b in zip(pictures, together[key], strict=True)), key
    assert not np.array_equal(alone["vae"][0], alone["plain"][0])


def test_hires_requests_are_checked_before_anything_runs(generator, tiny_models):
    sd = tiny_models["sd"]
    with pytest.raises(InvalidRequestError, match="text-to-image"):
        _spec(sd, mode="image-to-image", image=Image.new("RGB", (64, 64)), hires=LATENT)
    with pytest.raises(InvalidRequestError, match="2048"):
        _spec(sd, width=1536, height=1536, hires={"scale": 2})
    with pytest.raises(InvalidRequestError, match="ESRGAN"):
        _spec(sd, hires={"scale": 2, "upscaler": "R-ESRGAN 4x+"})
    # The height is the model's own (64): checked at submission against its folder.
    spec = JobSpec.build(model=str(sd), options=OFF, prompt="x", width=1024, hires={"scale": 4})
    with pytest.raises(InvalidRequestError, match="4096"):
        generator.check(spec)


# -- the VAE override ------------------------------------------------------------------------
def _tiny_vae_state(seed: int):
    from bildwerk.models.tiny import _vae

    torch.manual_seed(seed)
    return _vae().state_dict()


@pytest.fixture
def vae_file(tmp_path, monkeypatch):
    """A tiny VAE with other random weights, one diffusers-layout .safetensors in $BILDWERK_HOME/vae."""
    from safetensors.torch import save_file

    from bildwerk.core.paths import bildwerk_home

    folder = bildwerk_home() / "vae"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "other-vae.safetensors"
    save_file({k: v.contiguous() for k, v in _tiny_vae_state(123).items()}, str(path))
    return path


def test_vae_override_changes_the_picture_and_is_recorded(generator, tiny_models, runs, vae_file, tmp_path):
    sd = tiny_models["sd"]
    plain = runs["plain"][0]
    other = generator.run(_spec(sd, vae="other-vae.safetensors"))
    assert not np.array_equal(_px(plain)[0], _px(other)[0])
    assert other.record()["details"]["vae"] == {"name": "other-vae", "from": "request", "kind": "file"}
    assert "VAE: other-vae" in other.parameters_text(0)
    assert generator.run(_spec(sd, vae="auto")).record()["details"] == {}
    # The same weights in A1111's original layout (bare, and with a checkpoint's prefix) decode alike.
    from safetensors.torch import save_file

    from bildwerk.models.tiny import _vae
    from bildwerk.models.tiny_single_file import vae_to_original

    original = vae_to_original(_tiny_vae_state(123), dict(_vae().config))
    save_file(original, str(vae_file.parent / "orig-vae.safetensors"))
    save_file({f"first_stage_model.{k}": v for k, v in original.items()}, str(vae_file.parent / "prefixed.safetensors"))
    for name in ("orig-vae", "prefixed"):
        assert np.array_equal(_px(generator.run(_spec(sd, vae=name)))[0], _px(other)[0]), name
    # A model's own default VAE, named in its bildwerk.json.
    model = tmp_path / "with-vae"
    shutil.copytree(sd, model)
    (model / "bildwerk.json").write_text(json.dumps({"vae": "other-vae"}), "utf-8")
    by_config = generator.run(_spec(model))
    assert np.array_equal(_px(by_config)[0], _px(other)[0])
    assert by_config.record()["details"]["vae"]["from"] == "model"


@pytest.mark.extended  # two more generations
def test_vae_override_encodes_image_to_image_inputs(generator, tiny_models, runs, vae_file):
    sd = tiny_models["sd"]
    i2i = dict(mode="image-to-image", image=runs["plain"][0].images[0], strength=0.5)
    own = generator.run(_spec(sd, **i2i))
    other = generator.run(_spec(sd, vae="other-vae", **i2i))
    assert not np.array_equal(_px(own)[0], _px(other)[0])
    assert other.record()["details"]["vae"]["name"] == "other-vae"


def test_bad_vae_files_give_clear_errors(generator, tiny_models, vae_file):
    sd = tiny_models["sd"]
    folder = vae_file.parent
    with pytest.raises(AssetNotFoundError, match="models list --kind vae"):
        generator.check(_spec(sd, vae="no-such-vae"))
    torch.save({"decoder.conv_in.weight": torch.zeros(1)}, folder / "pickled.safetensors")
    with pytest.raises(UnsafeModelError, match="safetensors"):
        generator.check(_spec(sd, vae="pickled"))
    data = vae_file.read_bytes()
    (folder / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedModelError, match="cut"):
        generator.run(_spec(sd, vae="cut"))
    from safetensors.torch import save_file

    from bildwerk.models.tiny import _text_encoder

    save_file(_text_encoder(32).state_dict(), str(folder / "not-a-vae.safetensors"))
    with pytest.raises(UnsupportedModelError, match="no VAE weights"):
        generator.run(_spec(sd, vae="not-a-vae"))
    from diffusers import AutoencoderKL

    wide = AutoencoderKL(block_out_channels=(32, 64), latent_channels=16, norm_num_groups=32,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    save_file(wide.state_dict(), str(folder / "sd3-like.safetensors"))
    with pytest.raises(UnsupportedModelError, match="sd3-like"):
        generator.run(_spec(sd, vae="sd3-like"))


def test_controlnet_guides_the_hires_pass_at_its_size(engine, tiny_models, tiny_controlnets, tmp_path):
    from PIL import ImageDraw

    home = tmp_path / "bildwerk-home" / "controlnet"
    home.mkdir(parents=True)
    (home / "cn-sd").symlink_to(tiny_controlnets["cn-sd"])
    edges = Image.new("RGB", (64, 64), (240, 240, 240))
    ImageDraw.Draw(edges).rectangle((8, 8, 40, 40), fill=(10, 10, 10))
    spec = _spec(tiny_models["sd"], hires=LATENT,
                 controls=[{"model": "cn-sd", "image": edges, "preprocessor": "canny"}])
    job = engine.prepare(spec.request)
    while not (job.hires is not None and job.hires.started):
        engine.step([job])
    assert [tuple(s.cond.shape) for s in job.state.controls] == [(1, 3, 96, 96)]
    while not job.done:
        engine.step([job])
    result = engine.finish(job)
    assert result.images[0].size == (96, 96) and any("ControlNet cn-sd" in n for n in result.notes)


def test_a_single_file_checkpoint_names_its_vae_in_its_sidecar(generator, tiny_single_files, single_file_configs,
                                                              vae_file, tmp_path):
    ckpt = tmp_path / "mine.safetensors"
    shutil.copyfile(tiny_single_files["sd"], ckpt)
    (tmp_path / "mine.bildwerk.json").write_text(json.dumps({"vae": "other-vae"}), "utf-8")
    result = generator.run(_spec(ckpt))
    assert result.record()["details"]["vae"] == {"name": "other-vae", "from": "model", "kind": "file"}


@pytest.mark.extended  # test time: make test keeps the cheaper cases of this feature
def test_a_lora_applies_to_a_hires_job_and_does_not_leak(generator, tiny_models, runs, tmp_path):
    """A hires job with a LoRA (kohya layout) differs from the plain hires picture; the plain
    hires request after it gives exactly the plain hires picture again."""
    from bildwerk.core.paths import bildwerk_home
    from bildwerk.models.tiny import build_tiny_pipeline
    from bildwerk.models.tiny_lora import save_tiny_lora

    loras = bildwerk_home() / "loras"
    loras.mkdir(parents=True)
    save_tiny_lora(loras / "style.safetensors", build_tiny_pipeline("sd"))
    sd = tiny_models["sd"]
    with_lora = generator.run(_spec(sd, hires=LATENT, loras=[{"name": "style", "weight": 1.0}]))
    assert with_lora.images[0].size == (96, 96)
    assert not np.array_equal(_px(with_lora)[0], _px(runs["latent"][0])[0])
    assert np.array_equal(_px(generator.run(_spec(sd, hires=LATENT)))[0], _px(runs["latent"][0])[0])
