"""The engine's speed switches (engines/speed.py) on the CPU: settings from the environment,
per-device defaults, and that no switch changes the picture beyond rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bildwerk.core.errors import InvalidRequestError
from bildwerk.core.request import GenerationRequest
from bildwerk.engines.denoise import DenoiseState, run_unet
from bildwerk.engines.diffusers_engine import DiffusersEngine
from bildwerk.engines.speed import (
    QKV_FUSED,
    SpeedSettings,
    UNetCall,
    bucket_rows,
    speed_of,
)
from bildwerk.models.loader import ModelManager

ROOT = Path(__file__).resolve().parents[2]


def test_settings_from_the_environment():
    s = SpeedSettings.from_env({
        "BILDWERK_CHANNELS_LAST": "1", "BILDWERK_FUSE_QKV": "off", "BILDWERK_ATTENTION": "Flash",
        "BILDWERK_COMPILE": "unet+vae", "BILDWERK_COMPILE_MODE": "reduce-overhead",
        "BILDWERK_COMPILE_SIZES": "512x512, 1024x768", "BILDWERK_ROW_BUCKETS": "16,2,4",
        "BILDWERK_EXACT_BATCHING": "auto", "BILDWERK_VAE_BATCH": "4", "BILDWERK_VAE_TILE_ABOVE": "0",
        "BILDWERK_PREVIEW": "vae", "BILDWERK_COMPILE_CACHE": "/tmp/cc"})
    assert (s.channels_last, s.fuse_qkv, s.attention, s.compile, s.compile_mode) == (
        True, False, "flash", "unet+vae", "reduce-overhead")
    assert s.compile_sizes == ((512, 512), (1024, 768)) and s.exact_batching is None
    r = s.resolve(torch.device("cuda"))
    assert r.row_buckets == (2, 4, 16) and r.cuda_graphs and r.vae_batch == 4 and r.vae_tile_above == 0
    assert r.describe()["compile_sizes"] == ["512x512", "1024x768"]
    json.dumps(r.describe())  # records and the bench write it as JSON


@pytest.mark.parametrize(("env", "says"), [
    ({"BILDWERK_COMPILE": "yes"}, "BILDWERK_COMPILE 'yes' is not one of off, unet, unet+vae"),
    ({"BILDWERK_CHANNELS_LAST": "maybe"}, "BILDWERK_CHANNELS_LAST='maybe': use 1 or 0"),
    ({"BILDWERK_COMPILE_SIZES": "512"}, "'512' is not a size like 512x512"),
    ({"BILDWERK_ROW_BUCKETS": "2,x"}, "expected whole numbers"),
    ({"BILDWERK_ATTENTION": "xformers"}, "BILDWERK_ATTENTION 'xformers' is not one of"),
])
def test_bad_settings_fail_in_one_line(env, says):
    with pytest.raises(InvalidRequestError) as err:
        SpeedSettings.from_env(env)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_defaults_per_device():
    cpu, cuda = SpeedSettings().resolve(torch.device("cpu")), SpeedSettings().resolve(torch.device("cuda"))
    # The CPU keeps what was measured and proved there: eager, NCHW, bit-exact batching, one decode at a time.
    assert (cpu.channels_last, cpu.fuse_qkv, cpu.exact_batching, cpu.vae_batch, cpu.compile) == (
        False, False, True, 1, "off")
    assert (cuda.channels_last, cuda.fuse_qkv, cuda.exact_batching, cuda.vae_batch) == (True, True, False, 8)


def test_row_buckets():
    buckets = (2, 4, 8, 12, 16)
    assert [bucket_rows(n, buckets) for n in (1, 2, 3, 9, 16, 17)] == [2, 2, 4, 12, 16, 17]


def _pixels(model: Path, speed: SpeedSettings, **kw) -> np.ndarray:
    engine = DiffusersEngine(ModelManager(device="cpu"), speed=speed)
    req = GenerationRequest(prompt="a red car", steps=3, seed=3, model=str(model), **kw)
    return np.asarray(engine.generate(req).images[0]).astype(int)


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_switches_keep_the_picture(tiny_models, kind):
    """channels_last, fused QKV and another SDPA backend compute the same network: the picture
    may move by rounding only (fp32 here; the GPU bench reports the bf16 difference)."""
    plain = _pixels(tiny_models[kind], SpeedSettings())
    fast = _pixels(tiny_models[kind], SpeedSettings(channels_last=True, fuse_qkv=True, attention="math",
                                                    exact_batching=False))
    assert np.abs(plain - fast).max() <= 2
    assert np.abs(plain - fast).mean() < 0.05


def test_padding_to_a_row_bucket_leaves_each_row_exact(engine, tiny_models):
    """A compiled call pads its rows up to a bucket (repeating the last row); with the CPU's exact
    batching every real row's prediction is bit-identical to the unpadded call's."""
    model = engine.models.get(str(tiny_models["sd"]))
    job = engine.prepare(GenerationRequest(prompt="ein See", steps=2, seed=5, model=str(tiny_models["sd"])))
    state: DenoiseState = job.state
    (plain,) = run_unet(model.unet, [state.unet_inputs()])
    (padded,) = run_unet(UNetCall(model.unet, pad_to=lambda rows: bucket_rows(rows, (2, 8))),
                         [state.unet_inputs()])
    assert plain.shape == padded.shape and torch.equal(plain, padded)


def test_a_lora_on_a_fused_model_applies(tiny_models, tmp_path):
    """Fused QKV projections would not see a LoRA on to_q/to_k/to_v: the engine goes back to
    separate projections for good, and the LoRA picture equals the one on an unfused model."""
    from bildwerk.core.paths import bildwerk_home
    from bildwerk.models.tiny import build_tiny_pipeline
    from bildwerk.models.tiny_lora import save_tiny_lora

    (bildwerk_home() / "loras").mkdir(parents=True)
    save_tiny_lora(bildwerk_home() / "loras" / "style.safetensors", build_tiny_pipeline("sd"))
    model = tiny_models["sd"]
    fused_engine = DiffusersEngine(ModelManager(device="cpu"), speed=SpeedSettings(fuse_qkv=True))
    req = GenerationRequest(prompt="a red car", steps=3, seed=3, model=str(model), loras=[{"name": "style"}])
    plain_fused = np.asarray(fused_engine.generate(req.model_copy(update={"loras": []})).images[0]).astype(int)
    assert fused_engine.models.current.extras[QKV_FUSED] is True
    with_lora = np.asarray(fused_engine.generate(req).images[0]).astype(int)
    assert fused_engine.models.current.extras[QKV_FUSED] is False
    reference = _pixels(model, SpeedSettings(), loras=[{"name": "style"}])
    assert np.abs(with_lora - reference).max() <= 2
    assert np.abs(with_lora - plain_fused).mean() > 1  # the LoRA changed the picture


def test_the_engine_applies_its_settings_once(tiny_models):
    engine = DiffusersEngine(ModelManager(device="cpu"), speed=SpeedSettings(channels_last=True))
    engine.load(str(tiny_models["sd"]))
    model = engine.models.current
    assert speed_of(model).channels_last
    assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert "compile_seconds" not in model.extras  # nothing to compile, nothing warmed
    result = engine.generate(GenerationRequest(prompt="x", steps=1, seed=1, model=str(tiny_models["sd"])))
    assert result.record()["model"]["speed"] == {"exact_batching": True, "compile": "off", "fuse_qkv": False,
                                                 "channels_last": True, "attention": "auto"}


_COMPILE_RUN = """
import json, sys, time, numpy as np, torch
from bildwerk.core.request import GenerationRequest
from bildwerk.engines.diffusers_engine import DiffusersEngine
from bildwerk.engines.speed import SpeedSettings
from bildwerk.models.loader import ModelManager
torch.set_num_threads(1)
model, out = sys.argv[1], sys.argv[2]
engine = DiffusersEngine(ModelManager(device="cpu"), speed=SpeedSettings(compile="unet"))
t = time.perf_counter(); engine.load(model); load = time.perf_counter() - t
req = GenerationRequest(prompt="a red car", steps=3, seed=3, model=model)
np.save(out, np.asarray(engine.generate(req).images[0]))
print(json.dumps({"load": load, "compile": engine.models.current.extras["compile_seconds"]}))
"""


def test_compile_cache_goes_under_bildwerk_home(monkeypatch, tmp_path):
    """Inductor's own default (a temp folder it writes into the variable itself) is replaced by
    bildwerk's persistent folder; an operator's own choice is kept."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from bildwerk.engines.speed import _use_compile_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    _use_compile_cache(tmp_path / "cc")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc") and (tmp_path / "cc").is_dir()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    _use_compile_cache(tmp_path / "cc")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


# About 100 s on 2 cores (inductor compiles C++ for the CPU): `make test-slow`, not CI's groups.
@pytest.mark.slow
def test_compiled_unet_matches_eager_and_its_cache_survives_a_restart(tiny_models, tmp_path):
    """torch.compile (inductor, on the CPU here) gives the eager picture within rounding, and a
    second process finds the compiled graphs in the persistent cache instead of compiling again."""
    model = str(tiny_models["sd"])
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "BILDWERK_HOME": str(tmp_path / "home"),
           "OMP_NUM_THREADS": "1"}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    runs = []
    for i in range(2):
        proc = subprocess.run([sys.executable, "-c", _COMPILE_RUN, model, str(tmp_path / f"{i}.npy")],
                              env=env, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert (tmp_path / "home" / "cache" / "torch-compile").is_dir()
    first, second = runs[0]["compile"]["64x64"], runs[1]["compile"]["64x64"]
    assert second < first / 2, runs  # graphs from the cache, not compiled again
    eager = _pixels(tiny_models["sd"], SpeedSettings())
    for i in range(2):
        assert np.abs(np.load(tmp_path / f"{i}.npy").astype(int) - eager).max() <= 2
