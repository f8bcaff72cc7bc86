"""Training end to end on a tiny synthetic imagefolder: VAE, UNet from scratch, LoRA, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image, ImageDraw

from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.request import build_request
from bildwerk.engines.diffusers_engine import DiffusersEngine
from bildwerk.models.loader import ModelManager, load_model
from bildwerk.models.sentence_encoder import SentenceEncoder, SentenceEncoderConfig
from bildwerk.train import prepared as prepared_mod
from bildwerk.train.checkpoints import latest_checkpoint
from bildwerk.train.config import TrainConfig, VaeTrainConfig
from bildwerk.train.progress import read_log
from bildwerk.train.unet import prepare_file, train_unet
from bildwerk.train.vae import train_vae

SHAPES = [
    ("red circle", "roter Kreis", "빨간 원", (220, 30, 30), "ellipse"),
    ("blue square", "blaues Quadrat", "파란 사각형", (30, 60, 220), "rectangle"),
    ("green circle", "grüner Kreis", "초록 원", (30, 180, 60), "ellipse"),
    ("yellow square", "gelbes Quadrat", "노란 사각형", (230, 200, 20), "rectangle"),
]


def make_folder(root: Path, per_shape: int = 4, size: int = 32) -> Path:
    (root / "images").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for en, de, ko, color, shape in SHAPES:
        for k in range(per_shape):
            im = Image.new("RGB", (size, size), "white")
            o = int(rng.integers(2, 8))
            getattr(ImageDraw.Draw(im), shape)((o, o, size - o, size - o), fill=color)
            name = f"images/{en.replace(' ', '_')}_{k}.png"
            im.save(root / name)
            rows.append({"file_name": name, "text": en, "text_de": de, "text_ko": ko,
                         "split": "test" if k == 0 else "train"})
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["file_name", "text", "text_de", "text_ko", "split"])
        w.writeheader()
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def vae_dir(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vae")
    cfg = VaeTrainConfig(data=folder, out=out, resolution=32, crop=16, steps=6, batch_size=4,
                         block_out_channels=(32, 32), checkpoint_every=3, device="cpu")
    return train_vae(cfg, show_progress=False)


TINY_UNET = {"block_out_channels": (32, 32), "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "attention_head_dim": 4}


def test_vae_trains_and_records_quality(vae_dir):
    import json

    q = json.loads((vae_dir / "quality.json").read_text())
    assert q["on"] == "test" and q["psnr_db"] > 0 and q["scaling_factor"] > 0
    from diffusers import AutoencoderKL

    assert AutoencoderKL.from_pretrained(vae_dir).config.scaling_factor == pytest.approx(q["scaling_factor"])


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_decoder_only_fine_tune_keeps_the_latent_space(folder, vae_dir, tmp_path):
    from diffusers import AutoencoderKL

    base = AutoencoderKL.from_pretrained(vae_dir)
    # A model folder is accepted too: its vae/ is used.
    model = tmp_path / "model"
    base.save_pretrained(model / "vae")
    cfg = VaeTrainConfig(data=folder, out=tmp_path / "dec", resolution=32, crop=None, steps=4, batch_size=4,
                         learning_rate=1e-2, checkpoint_every=2, device="cpu", init_from=model, decoder_only=True)
    tuned = AutoencoderKL.from_pretrained(train_vae(cfg, show_progress=False))

    for part in ("encoder", "quant_conv"):
        before, after = _state(getattr(base, part)), _state(getattr(tuned, part))
        assert all(torch.equal(before[k], after[k]) for k in before), part
    changed = [k for k, v in _state(tuned.decoder).items() if not torch.equal(v, base.decoder.state_dict()[k])]
    assert changed, "the decoder did not train"
    assert tuned.config.scaling_factor == base.config.scaling_factor
    q = json.loads((tmp_path / "dec" / "vae" / "quality.json").read_text())
    assert q["decoder_only"] is True and q["init_from"] == str(model / "vae")
    # Resuming a finished run trains nothing more and keeps the encoder.
    again = AutoencoderKL.from_pretrained(train_vae(cfg, show_progress=False))
    assert torch.equal(again.encoder.conv_in.weight, base.encoder.conv_in.weight)


def test_decoder_only_needs_a_vae_to_start_from(folder, tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        VaeTrainConfig(data=folder, out=tmp_path, decoder_only=True)


@pytest.mark.parametrize("decoder", [False, True])
def test_the_default_recipe_runs_end_to_end(folder, tmp_path, decoder):
    from diffusers import AutoencoderKL

    from bildwerk.train.recipe import train_default_model

    small = {"resolution": 32, "batch_size": 4, "device": "cpu", "checkpoint_every": 1}
    model = train_default_model(
        folder, tmp_path / "work", show_progress=False, decoder=decoder,
        vae_overrides={**small, "steps": 2, "crop": 16, "block_out_channels": (32, 32)},
        decoder_overrides={**small, "steps": 2, "learning_rate": 1e-2},
        unet_overrides={**small, "steps": 1, "sample_every": 1, "unet": TINY_UNET},
    )
    first = AutoencoderKL.from_pretrained(tmp_path / "work" / "vae-run" / "vae")
    shipped = AutoencoderKL.from_pretrained(model / "vae")
    assert torch.equal(first.encoder.conv_in.weight, shipped.encoder.conv_in.weight)
    # The decoder stage is opt-in; with it the model carries the fine-tuned decoder.
    assert torch.equal(first.decoder.conv_out.weight, shipped.decoder.conv_out.weight) is not decoder
    assert (tmp_path / "work" / "decoder-run").exists() is decoder


def test_install_puts_an_fp16_model_in_place_of_the_old_one(folder, vae_dir, tmp_path):
    from bildwerk.train.recipe import install_default_model

    cfg = TrainConfig(data=folder, out=tmp_path / "run", vae=vae_dir, resolution=32, steps=1, batch_size=4,
                      checkpoint_every=1, sample_every=0, unet=TINY_UNET, device="cpu")
    model = train_unet(cfg, show_progress=False)
    target = tmp_path / "pkg" / "default"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("the previous default")
    assert install_default_model(model, target, guidance=3.0) == target
    assert not (target / "stale.txt").exists()
    assert [p.name for p in target.parent.iterdir()] == ["default"]  # no .new / .old left behind
    from safetensors import safe_open

    with safe_open(target / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    conf = json.loads((target / "bildwerk.json").read_text())
    assert conf["name"] == "bildwerk-default" and conf["defaults"]["guidance"] == 3.0
    assert load_model(str(target), device="cpu").family == "sentence"


def test_unet_from_scratch_gives_a_multilingual_model_the_engine_runs(folder, vae_dir, tmp_path):
    out = tmp_path / "run"
    seen = []
    cfg = TrainConfig(data=folder, out=out, vae=vae_dir, resolution=32, steps=4, batch_size=4,
                      checkpoint_every=2, sample_every=4, sample_prompts=["red circle", "빨간 원"],
                      unet=TINY_UNET, device="cpu", warmup_steps=1)
    model_dir = train_unet(cfg, show_progress=False, callback=seen.append)
    assert [e["step"] for e in seen] == [1, 2, 3, 4]
    assert all(np.isfinite(e["loss"]) and e["it_s"] > 0 for e in seen)
    assert (out / "samples" / "step-000004.png").is_file()
    model = load_model(str(model_dir), device="cpu")
    assert model.family == "sentence"
    sched = model.pipe.scheduler
    sched.set_timesteps(20)
    assert float(sched.alphas_cumprod[int(sched.timesteps[0])]) > 1e-3  # never starts where there is no signal
    assert model.extras["config"]["conditioning"]["scale"] == pytest.approx(512**0.5)
    engine = DiffusersEngine(ModelManager(device="cpu"))
    r = engine.generate(build_request(prompt="ein roter Kreis", model=str(model_dir), seed=1, steps=3))
    assert r.images[0].size == (32, 32)  # the model's own size
    r = engine.generate(build_request(prompt="ein roter Kreis", model=str(model_dir), seed=1, steps=3,
                                      mode="image-to-image", image=Image.new("RGB", (64, 64), "white")))
    assert r.images[0].size == (64, 64)
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 24, 24), fill=255)
    src = Image.new("RGB", (32, 32), (10, 200, 10))
    r = engine.generate(build_request(mode="inpaint", prompt="blaues Quadrat", image=src, mask=mask,
                                      model=str(model_dir), seed=1, steps=3))
    inside = np.asarray(mask) > 0
    assert np.array_equal(np.asarray(r.images[0])[~inside], np.asarray(src)[~inside])


def test_resume_continues_from_the_last_checkpoint(folder, vae_dir, tmp_path):
    out = tmp_path / "resume"
    base = dict(data=folder, out=out, vae=vae_dir, resolution=32, batch_size=4, checkpoint_every=2,
                sample_every=0, unet=TINY_UNET, device="cpu", warmup_steps=1)
    train_unet(TrainConfig(steps=2, precision="fp32", **base), show_progress=False)
    assert latest_checkpoint(out).name == "step-2"
    seen = []
    # The weights stay fp32 whatever the compute precision, so a run may resume with another one.
    train_unet(TrainConfig(steps=4, precision="bf16", **base), show_progress=False, callback=seen.append)
    assert [e["step"] for e in seen] == [3, 4]  # picked up where it stopped
    assert all(np.isfinite(e["loss"]) for e in seen)
    assert [e["step"] for e in read_log(out / "train_log.jsonl")] == [1, 2, 3, 4]
    meta = json.loads((latest_checkpoint(out) / "meta.json").read_text())
    assert meta["step"] == 4 and meta["precision"] == "bf16"
    unet = UNet2DConditionModel.from_pretrained(out / "model" / "unet")
    assert {p.dtype for p in unet.parameters()} == {torch.float32}


def test_lora_fine_tune_of_a_clip_model(folder, tiny_models, tmp_path):
    out = tmp_path / "lora"
    cfg = TrainConfig(data=folder, out=out, base_model=str(tiny_models["sd"]), method="lora", resolution=64,
                      steps=3, batch_size=2, checkpoint_every=3, sample_every=0, device="cpu",
                      learning_rate=1e-2, warmup_steps=1)
    model_dir = train_unet(cfg, show_progress=False)
    assert (out / "checkpoints" / "step-3" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    tuned = load_model(str(model_dir), device="cpu")
    base = load_model(str(tiny_models["sd"]), device="cpu")
    diff = sum(float((a - b).abs().sum()) for a, b in zip(tuned.unet.parameters(), base.unet.parameters(), strict=True))
    assert diff > 0  # the merged adapter really changed the weights
    r = DiffusersEngine(ModelManager(device="cpu")).generate(
        build_request(prompt="red circle", model=str(model_dir), seed=1, steps=2))
    assert r.images[0].size == (64, 64)
    # Trained on German and Korean captions too: the model says so, and takes them untranslated.
    assert json.loads((model_dir / "bildwerk.json").read_text())["languages"] == ["de", "en", "ko"]
    from bildwerk.prompts.pipeline import run_prompt_pipeline

    rec = run_prompt_pipeline("ein roter Kreis", model=str(model_dir))
    assert rec.prompt == "ein roter Kreis" and rec.step("translate").details["skipped"]


def test_the_training_size_defaults_to_the_base_models_own(folder, tiny_models, tmp_path):
    from bildwerk.train.unet import resolve_resolution

    def size(**kw):
        cfg, why = resolve_resolution(TrainConfig(data=folder, out=tmp_path, **kw))
        return cfg.resolution, why

    assert size(base_model="default") == (64, "the base model's own")  # not 512: ~25x the work
    assert size(base_model=str(tiny_models["sd"]))[0] == load_model(str(tiny_models["sd"]), device="cpu").native_size
    assert size(base_model="org/not-here")[0] == 512
    assert size(vae=tmp_path) == (64, "the default for a new model")
    assert size(base_model="default", resolution=128) == (128, "--resolution")


def test_a_model_records_its_captions_languages_and_its_bases(folder, tmp_path):
    from bildwerk.train.unet import _model_languages, _Parts

    def parts(conf):
        return _Parts(unet=None, vae=None, scheduler=None, family="sd", base_config=conf)

    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "model_index.json").write_text("{}")
    cfg = TrainConfig(data=folder, out=tmp_path, base_model=str(clip))
    assert _model_languages(cfg, parts(None), ["de"]) == ["de", "en"]  # a CLIP base reads English too
    again = TrainConfig(data=folder, out=tmp_path, base_model="default")
    assert _model_languages(again, parts({"languages": ["de"]}), ["fr"]) == ["de", "fr"]  # a base's record stays
    assert _model_languages(TrainConfig(data=folder, out=tmp_path, vae=tmp_path), parts(None), []) is None


def test_full_fine_tune_of_a_clip_model_changes_its_weights(folder, tiny_models, tmp_path):
    cfg = TrainConfig(data=folder, out=tmp_path / "full", base_model=str(tiny_models["sd"]), method="full",
                      resolution=64, steps=2, batch_size=2, checkpoint_every=2, sample_every=0, device="cpu",
                      learning_rate=1e-2, warmup_steps=1)
    tuned = load_model(str(train_unet(cfg, show_progress=False)), device="cpu")
    base = load_model(str(tiny_models["sd"]), device="cpu")
    diff = sum(float((a - b).abs().sum()) for a, b in zip(tuned.unet.parameters(), base.unet.parameters(), strict=True))
    assert diff > 0


def test_v_prediction_from_scratch_is_recorded_and_samples(folder, vae_dir, tmp_path):
    cfg = TrainConfig(data=folder, out=tmp_path / "v", vae=vae_dir, resolution=32, steps=2, batch_size=4,
                      checkpoint_every=2, sample_every=2, sample_prompts=["red circle"], unet=TINY_UNET,
                      device="cpu", warmup_steps=1, prediction_type="v_prediction")
    model_dir = train_unet(cfg, show_progress=False)
    model = load_model(str(model_dir), device="cpu")
    assert model.pipe.scheduler.config.prediction_type == "v_prediction"
    r = DiffusersEngine(ModelManager(device="cpu")).generate(
        build_request(prompt="ein roter Kreis", model=str(model_dir), seed=1, steps=3))
    assert np.isfinite(np.asarray(r.images[0], dtype=float)).all()
    with pytest.raises(ValueError):
        TrainConfig(data=folder, out=tmp_path / "x", prediction_type="sample")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_fine_tune_the_embedded_default_model(folder, tmp_path, method):
    """The museum's path: its own captioned pictures on top of bildwerk's default model, offline."""
    cfg = TrainConfig(data=folder, out=tmp_path / method, base_model="default", method=method, resolution=64,
                      steps=2, batch_size=2, checkpoint_every=2, sample_every=0, device="cpu",
                      learning_rate=1e-3, warmup_steps=1, name="museum-model")
    model_dir = train_unet(cfg, show_progress=False)
    tuned = load_model(str(model_dir), device="cpu")
    base = load_model("default", device="cpu")
    assert tuned.family == base.family == "sentence"  # still multilingual, no translation needed
    assert tuned.name == "museum-model"
    assert tuned.default_guidance == base.default_guidance  # the base's recommendation carries over
    moved = sum(float((a.float() - b.float()).abs().sum())
                for a, b in zip(tuned.unet.parameters(), base.unet.parameters(), strict=True))
    assert moved > 0
    if method == "lora":
        assert (tmp_path / method / "checkpoints" / "step-2" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    r = DiffusersEngine(ModelManager(device="cpu")).generate(
        build_request(prompt="ein roter Kreis", model=str(model_dir), seed=1, steps=2))
    assert r.images[0].size == (64, 64)


def test_gradient_accumulation_runs_micro_batches_per_step(folder, vae_dir, tmp_path, monkeypatch):
    import bildwerk.train.unet as unet_mod

    calls = []
    real = unet_mod._min_snr_weights
    monkeypatch.setattr(unet_mod, "_min_snr_weights", lambda s, t, g: calls.append(len(t)) or real(s, t, g))
    seen = []
    cfg = TrainConfig(data=folder, out=tmp_path / "accum", vae=vae_dir, resolution=32, steps=2, batch_size=3,
                      gradient_accumulation=4, checkpoint_every=2, sample_every=0, unet=TINY_UNET,
                      device="cpu", warmup_steps=1)
    train_unet(cfg, show_progress=False, callback=seen.append)
    assert calls == [3] * 8  # 4 micro-batches of 3 for each of the 2 optimizer steps
    assert [e["step"] for e in seen] == [1, 2] and all(np.isfinite(e["loss"]) for e in seen)
    with pytest.raises(ValueError):
        TrainConfig(data=folder, out=tmp_path / "x", gradient_accumulation=0)


def test_fine_tuning_converts_an_epsilon_model_to_v_prediction(folder, tmp_path):
    from diffusers.training_utils import compute_snr

    from bildwerk.train import unet as unet_mod

    assert load_model("default", device="cpu").pipe.scheduler.config.prediction_type == "epsilon"
    seen = []
    real_weights = unet_mod._min_snr_weights

    def spy(scheduler, t, gamma):
        seen.append(scheduler.config.prediction_type)
        return real_weights(scheduler, t, gamma)

    cfg = TrainConfig(data=folder, out=tmp_path / "v", base_model="default", resolution=64, steps=1, batch_size=2,
                      checkpoint_every=1, sample_every=0, device="cpu", warmup_steps=1,
                      prediction_type="v_prediction")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(unet_mod, "_min_snr_weights", spy)
        model_dir = train_unet(cfg, show_progress=False)
    assert seen == ["v_prediction"]  # trained on the v target
    tuned = load_model(str(model_dir), device="cpu")
    assert tuned.pipe.scheduler.config.prediction_type == "v_prediction"  # and samples as such
    # The sampler keeps the base model's spacing (and everything else it had).
    base_sched = load_model("default", device="cpu").pipe.scheduler.config
    assert tuned.pipe.scheduler.config.timestep_spacing == base_sched.timestep_spacing
    r = DiffusersEngine(ModelManager(device="cpu")).generate(
        build_request(prompt="ein roter Kreis", model=str(model_dir), seed=1, steps=2))
    assert np.isfinite(np.asarray(r.images[0], dtype=float)).all()
    # Min-SNR for v weighs by min(snr, gamma) / (snr + 1).
    t = torch.tensor([10, 500, 990])
    sched = unet_mod.training_scheduler("v_prediction")
    snr = compute_snr(sched, t)
    assert torch.allclose(real_weights(sched, t, 5.0), torch.clamp(snr, max=5.0) / (snr + 1))


# -- prepared data: encode once, resume without encoding, train elsewhere from one file ------

def _small(**kw):
    return dict(resolution=32, batch_size=4, checkpoint_every=2, sample_every=0, unet=TINY_UNET, device="cpu",
                warmup_steps=1, precision="fp32", **kw)


def test_a_prepared_file_trains_the_same_model_without_pictures_or_encoder(folder, vae_dir, tmp_path, monkeypatch):
    seen_a = []
    a = train_unet(TrainConfig(data=folder, out=tmp_path / "a", vae=vae_dir, steps=3, **_small()),
                   show_progress=False, callback=seen_a.append)
    assert (tmp_path / "a" / "prepared.safetensors").is_file()  # the run keeps what it encoded
    assert not (tmp_path / "a" / "samples").exists()  # sample_every=0: no grids
    path = prepare_file(TrainConfig(data=folder, out=tmp_path, vae=vae_dir, **_small()), tmp_path / "p.safetensors")

    def unavailable(*args, **kwargs):
        raise AssertionError("a prepared file must not need this")

    monkeypatch.setattr(SentenceEncoder, "embed_texts", unavailable)
    monkeypatch.setattr("bildwerk.train.imagefolder.load_imagefolder", unavailable)
    seen = []
    b = train_unet(TrainConfig(data=path, out=tmp_path / "b", vae=vae_dir, steps=3, **_small()),
                   show_progress=False, callback=seen.append)
    # Same data, same seed: the same batches and the same training (up to float rounding in
    # another memory layout), so the same losses.
    assert [e["loss"] for e in seen] == pytest.approx([e["loss"] for e in seen_a], rel=1e-4)
    assert (b / "unet").is_dir() and (a / "unet").is_dir()


def test_resume_reads_the_runs_cache_and_changed_pictures_are_encoded_again(folder, vae_dir, tmp_path, monkeypatch):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(folder, data)
    calls = []
    real = prepared_mod.encode_latents

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(prepared_mod, "encode_latents", counting)
    base = dict(data=data, out=tmp_path / "run", vae=vae_dir, **_small())
    train_unet(TrainConfig(steps=2, **base), show_progress=False)
    train_unet(TrainConfig(steps=4, **base), show_progress=False)
    assert len(calls) == 1  # the resumed run read the cache
    Image.new("RGB", (32, 32), "black").save(data / "images" / "red_circle_1.png")
    train_unet(TrainConfig(steps=6, **base), show_progress=False)
    assert len(calls) == 2  # a changed picture: encoded again
    cached = prepared_mod.load(tmp_path / "run" / "prepared.safetensors")
    assert cached.meta["data"] == prepared_mod.folder_fingerprint(data)


def test_a_compact_file_is_small_close_and_checked_against_the_model(folder, vae_dir, tmp_path):
    from diffusers import AutoencoderKL

    cfg = TrainConfig(data=folder, out=tmp_path, vae=vae_dir, **_small())
    full = prepare_file(cfg, tmp_path / "full.safetensors")
    small = prepare_file(cfg, tmp_path / "small.safetensors", compact=True)
    assert small.stat().st_size < full.stat().st_size / 2
    f, c = prepared_mod.load(full), prepared_mod.load(small)
    for name in ("mean", "fmean"):
        span = f.latents[name].amax() - f.latents[name].amin()
        assert (f.latents[name] - c.latents[name]).abs().max() <= span / 255  # one 8-bit step at most
    assert torch.count_nonzero(c.latents["std"]) == 0  # compact trains on the means
    assert c.captions == f.captions and c.texts == f.texts
    # Training's conditioning from stored vectors is inference's from the encoder (fp16 apart).
    enc = SentenceEncoder(SentenceEncoderConfig(**f.meta["encoder"]))
    prompts = ["red circle", "빨간 원", "red circle"]
    assert torch.allclose(f.tokens(enc, prompts), enc.encode(prompts), atol=1e-2)
    v_f, v_c = f.vectors.astype(np.float32), c.vectors.astype(np.float32)
    assert np.abs(v_f - v_c).max() <= np.abs(v_f).max() / 127
    # The file must fit the model: another VAE, another size or missing mirror images are refused.
    other = AutoencoderKL.from_pretrained(vae_dir)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    other.save_pretrained(tmp_path / "other-vae")
    with pytest.raises(InvalidRequestError, match="another VAE"):
        train_unet(TrainConfig(data=small, out=tmp_path / "r1", vae=tmp_path / "other-vae", steps=1,
                               **_small()), show_progress=False)
    with pytest.raises(InvalidRequestError, match="32 px"):
        train_unet(TrainConfig(data=small, out=tmp_path / "r2", vae=vae_dir, steps=1,
                               **{**_small(), "resolution": 64}), show_progress=False)
    no_flip = prepare_file(TrainConfig(data=folder, out=tmp_path, vae=vae_dir, flip=False, **_small()),
                           tmp_path / "noflip.safetensors")
    with pytest.raises(InvalidRequestError, match="mirrored"):
        train_unet(TrainConfig(data=no_flip, out=tmp_path / "r3", vae=vae_dir, steps=1, **_small()),
                   show_progress=False)
    model = train_unet(TrainConfig(data=small, out=tmp_path / "r4", vae=vae_dir, steps=1, languages=("ko",),
                                   **_small()), show_progress=False)
    assert (model / "unet").is_dir()
    with pytest.raises(InvalidRequestError, match="not a prepared training file"):
        (tmp_path / "junk.safetensors").write_bytes(b"junk")
        prepared_mod.load(tmp_path / "junk.safetensors")
