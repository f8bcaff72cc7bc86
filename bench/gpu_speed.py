"""Speed of full-size SD 1.5, SD 2.x (768-v) and SDXL on one GPU: bildwerk against diffusers.

One run, on the lent H200 (``bash bench/gpu_run.sh`` there; docs/benchmarks.md):

    python bench/gpu_speed.py                        # everything the budget allows, in this order
    python bench/gpu_speed.py --sections sd15,server --budget-s 300
    python bench/gpu_speed.py --tiny --skip-compile  # tiny random models on the CPU (the tests)

The models are the published architectures with random weights (bench/architectures.py):
their FLOPs and memory, not their pictures. Diffusers' pipelines and bildwerk's engine run on
the same component objects. Sections, in priority order (``--sections`` picks some):

1. ``sd15``: SD 1.5 512 px text-to-image at batch 1: diffusers eager, then bildwerk's engine
   on a ladder of speed switches (plain eager; + channels_last; + fused QKV; each SDPA backend;
   the other half-precision dtype; + torch.compile of the UNet; + the VAE decoder; + CUDA
   graphs, compile mode reduce-overhead), each compile rung built on the fastest rung before
   it, then diffusers "compiled" (channels_last + fused QKV + torch.compile(unet)).
2. ``server``: the fastest settings through the real server (``python -m bildwerk serve`` in
   a subprocess, continuous batching), C client threads for each C in ``--levels``.
3. ``sdxl``, 4. ``sd2``: diffusers eager, bildwerk's fastest eager and compiled settings,
   diffusers compiled.
5. ``modes``: SD 1.5 image-to-image and only-masked inpainting (a 1024 px picture, a 256 px
   mask, the crop at 512 px), diffusers (``padding_mask_crop``) against bildwerk.
6. ``vae``: the engine's decoding, 8 pictures at ``vae_batch`` 1 and 8; 2048 px whole or tiled.
7. ``preview``: a progress preview by the fitted latent-to-colour map, and by a VAE decode.
8. ``consistency``: one seed alone and in a batch of 4 (exact batching is off on CUDA).
9. ``coldstart``: server process start to /ready, eager, and compiled with an empty and then
   a filled compile cache (the persistent cache's check).

Each measurement: a budget check first (``--budget-s``; a measurement that no longer fits is
"skipped: budget"), any error recorded and the run goes on, then the JSON (``--out``) and the
markdown beside it rewritten. Latency: median of ``--runs`` timed runs after ``--warmup``,
the device drained around each, PIL pictures out of both (decoding counted); compile time =
first call minus a steady one; peak memory = the allocator's peak over the timed runs.
Every bildwerk measurement also says its host syncs per step (torch's sync debug mode during
the engine's steps), its ratio to diffusers and its model FLOPs utilisation (UNet and VAE
FLOPs counted by FlopCounterMode, over ``--peak-tflops``), and how far its picture is from
the plain eager one's of the same seed.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import architectures
import batching  # the server client (bench/batching.py)
import gpu_measure as gm
import gpu_report
import torch

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("sd15", "server", "sdxl", "sd2", "modes", "vae", "preview", "consistency", "coldstart")
PROMPT = "a lighthouse on a rocky cliff at dusk, oil painting"
FULL = {"steps": 30, "runs": 5, "warmup": 1, "levels": "1,4,16,32", "jobs": 32}
TINY = {"steps": 3, "runs": 2, "warmup": 1, "levels": "1,2", "jobs": 2}
# Rough seconds each kind of measurement takes on the H200 at full size, so that one which
# no longer fits the budget is skipped rather than cut off by the command's time limit.
EST = {"build": 15, "eager": 10, "eager_xl": 30, "math": 30, "compile": 100, "compile_xl": 200,
       "server": 150, "save": 20, "vae": 20, "start": 40, "start_compile": 120, "small": 5}

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


# -- the speed settings, as the engine and as the server's environment take them -------------
def settings(**kw: Any):
    """Bench settings: everything explicit (no "auto"), exact batching off as on CUDA."""
    from bildwerk.engines.speed import SpeedSettings

    base = {"channels_last": False, "fuse_qkv": False, "exact_batching": False}
    return SpeedSettings(**{**base, **kw})


def speed_env(s: Any) -> dict[str, str]:
    """The BILDWERK_* variables that make ``SpeedSettings.from_env`` give ``s`` back (for the
    switches this bench varies)."""
    flag = {True: "1", False: "0", None: "auto"}
    return {"BILDWERK_CHANNELS_LAST": flag[s.channels_last], "BILDWERK_FUSE_QKV": flag[s.fuse_qkv],
            "BILDWERK_EXACT_BATCHING": flag[s.exact_batching], "BILDWERK_ATTENTION": s.attention,
            "BILDWERK_COMPILE": s.compile, "BILDWERK_COMPILE_MODE": s.compile_mode}


def reset_components(pipe: Any) -> None:
    """Back to the plain networks every measurement starts from: unfused projections,
    contiguous weights, nothing compiled, no tiling (each measurement sets its own switches)."""
    from diffusers.models.attention_processor import Attention
    from torch._dynamo.eval_frame import OptimizedModule

    if isinstance(pipe.unet, OptimizedModule):
        pipe.unet = pipe.unet._orig_mod
    if isinstance(pipe.vae.decoder, OptimizedModule):
        pipe.vae.decoder = pipe.vae.decoder._orig_mod
    for net in (pipe.unet, pipe.vae):
        if getattr(net, "original_attn_processors", None) is not None:
            net.unfuse_qkv_projections()
            net.original_attn_processors = None
        for m in net.modules():
            if isinstance(m, Attention) and getattr(m, "fused_projections", False):
                for name in ("to_qkv", "to_kv", "to_added_qkv"):
                    if hasattr(m, name):
                        delattr(m, name)  # a fused copy of to_q/k/v: not saved, not counted
                m.fused_projections = False
        net.to(memory_format=torch.contiguous_format)
    pipe.vae.disable_tiling()


@dataclass
class Subject:
    """One architecture built for this run, with what its FLOPs are."""

    name: str
    label: str
    pipe: Any
    size: int
    scale: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def flops_per_image(self) -> int | None:
        return self.info.get("flops_per_image")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.device = torch.device(args.device)
        self.dtype = DTYPES[args.dtype]
        self.tmp = Path(tempfile.mkdtemp(prefix="bildwerk-gpu-speed-"))
        os.environ.setdefault("BILDWERK_HOME", str(self.tmp / "home"))
        os.environ.pop("BILDWERK_MODEL", None)  # the adopted model is the default
        # One compile cache for this process's compiled rungs and the throughput server.
        self.compile_cache = self.tmp / "compile-cache"
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.compile_cache)
        self.subjects: dict[str, Subject] = {}
        self.outputs: dict[tuple[str, str], tuple[torch.Tensor, Any]] = {}
        self.result: dict[str, Any] = {
            "benchmark": "gpu-speed", "machine": machine(args.threads), "config": config(args),
            "architectures": {}, "sections": {s: [] for s in args.sections}, "notes": [],
        }
        self.note("Random weights: the pictures mean nothing, and fp16 ones may overflow (\"not finite\").")
        self.note("× diffusers: bildwerk's time over diffusers' for the same task (below 1: bildwerk is faster).")
        self.note("SDXL, SD 2.x, the modes, the server and the cold starts use the SD 1.5 ladder's fastest "
                  "settings (eager ones where so named).")
        self.write()

    # -- bookkeeping ------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def fits(self, est: str) -> bool:
        scale = 0.0 if self.args.tiny else 1.0  # --tiny: only a spent budget skips
        return self.elapsed() + EST[est] * scale <= self.args.budget_s

    def write(self) -> None:
        self.result["elapsed_seconds"] = self.elapsed()
        gpu_report.write(self.result, self.args.out)

    def measure(self, section: str, name: str, est: str, fn: Callable[[], dict[str, Any]],
                **meta: Any) -> dict[str, Any]:
        """One measurement: skipped when it no longer fits the budget, its error recorded, the
        result written after it."""
        entry: dict[str, Any] = {"name": name, **meta}
        if not self.fits(est):
            entry["status"] = "skipped: budget"
        else:
            t = time.monotonic()
            try:
                entry.update(fn())
                entry["status"] = "ok"
            except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
                entry.update(status="error", error=f"{type(exc).__name__}: {exc}"[:3000],
                             traceback=traceback.format_exc()[-4000:])
            entry["wall_seconds"] = time.monotonic() - t
            cleanup()
        self.result["sections"][section].append(entry)
        self.write()
        shown = f"{entry['seconds']:.3f} s" if entry.get("seconds") else entry["status"]
        print(f"[{self.elapsed():6.0f} s] {section} / {name}: {shown}", file=sys.stderr, flush=True)
        return entry

    def attempt(self, section: str, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None with its error recorded as the entry ``name`` (what a section needs
        first: a model built or saved)."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
            self.result["sections"][section].append(
                {"name": name, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:3000],
                 "traceback": traceback.format_exc()[-4000:]})
            self.write()
            return None

    def skip(self, section: str, name: str, why: str, **meta: Any) -> None:
        self.result["sections"][section].append({"name": name, "status": f"skipped: {why}", **meta})
        self.write()

    def note(self, text: str) -> None:
        if text not in self.result["notes"]:
            self.result["notes"].append(text)

    # -- models -----------------------------------------------------------------------------
    def subject(self, name: str) -> Subject:
        """The architecture ``name``, built once (and again after ``drop``); one at a time, so
        each measurement's memory holds its own model only."""
        if name in self.subjects:
            return self.subjects[name]
        for other in list(self.subjects):
            self.drop(other)
        arch = architectures.BY_NAME[name]
        t = time.monotonic()
        if self.args.tiny:
            pipe = architectures.build_tiny(name, seed=self.args.seed, tokenizer_dir=self.tmp / "tok")
            pipe.to(device=self.device, dtype=self.dtype)
        else:
            pipe = architectures.build(arch, device=self.device, dtype=self.dtype, seed=self.args.seed,
                                       tokenizer_dir=self.tmp / "tok")
        pipe.set_progress_bar_config(disable=True)
        scale = int(pipe.vae_scale_factor)
        size = int(pipe.unet.config.sample_size) * scale  # the native size, as bildwerk reads it
        s = Subject(name, arch.label + (" (tiny)" if self.args.tiny else ""), pipe, size, scale)
        nets = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
        if getattr(pipe, "text_encoder_2", None) is not None:
            nets["text_encoder_2"] = pipe.text_encoder_2
        info: dict[str, Any] = {"label": s.label, "size": size, "build_seconds": time.monotonic() - t,
                                "params": architectures.parameter_counts(nets)}
        try:
            info["unet_call_flops"] = gm.unet_call_flops(pipe.unet, width=size, height=size, rows=2, scale=scale)
            info["vae_decode_flops"] = gm.vae_decode_flops(pipe.vae, width=size, height=size, scale=scale)
            info["flops_per_image"] = self.args.steps * info["unet_call_flops"] + info["vae_decode_flops"]
        except Exception as exc:  # noqa: BLE001 - MFU is then not reported
            info["flops_error"] = f"{type(exc).__name__}: {exc}"
        s.info = info
        self.result["architectures"][name] = info
        print(f"built {s.label}: " + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in info["params"].items()),
              file=sys.stderr, flush=True)
        self.subjects[name] = s
        self.write()
        return s

    def drop(self, name: str) -> None:
        self.subjects.pop(name, None)
        cleanup(reset_compiled=True)

    def engine(self, subject: Subject, speed: Any, dtype: torch.dtype | None = None):
        """bildwerk's engine serving ``subject``'s components (adopted, as a loaded folder is)."""
        from bildwerk.engines.diffusers_engine import DiffusersEngine
        from bildwerk.models.loader import ModelManager, adopt_pipeline

        reset_components(subject.pipe)
        dt = DTYPE_NAMES[dtype or self.dtype]
        model = adopt_pipeline(subject.pipe, name=f"bench-{subject.name}", device=str(self.device), dtype=dt)
        manager = ModelManager(device=str(self.device), dtype=dt)
        manager.adopt(model)
        return DiffusersEngine(manager, speed=speed)

    # -- requests ---------------------------------------------------------------------------
    def request(self, subject: Subject, **kw: Any):
        from bildwerk.core.request import GenerationRequest

        base = {"prompt": PROMPT, "steps": self.args.steps, "guidance": self.args.guidance,
                "width": subject.size, "height": subject.size, "seed": self.args.seed}
        return GenerationRequest(**{**base, **kw})

    def diffusers_kwargs(self, subject: Subject) -> dict[str, Any]:
        return {"prompt": PROMPT, "num_inference_steps": self.args.steps, "guidance_scale": self.args.guidance,
                "height": subject.size, "width": subject.size, "output_type": "pil"}

    def generator(self) -> torch.Generator:
        return torch.Generator("cpu").manual_seed(self.args.seed)

    # -- one latency measurement ------------------------------------------------------------
    def diffusers_latency(self, subject: Subject, pipe: Any, call: dict[str, Any]) -> dict[str, Any]:
        """A diffusers pipeline's ``__call__`` (PIL out, as bildwerk's); MFU for text-to-image."""
        out = gm.time_calls(lambda: pipe(generator=self.generator(), **call), warmup=self.args.warmup,
                            runs=self.args.runs)
        out["mfu"] = None if "image" in call else self.mfu(subject, out["seconds"])
        return out

    def bildwerk_latency(self, section: str, name: str, subject: Subject, speed: Any, *,
                         dtype: torch.dtype | None = None, request: Any = None,
                         reference: str | None = None) -> dict[str, Any]:
        """bildwerk's engine at ``speed``: timing, compile time, memory, host syncs, MFU, and the
        difference to the measurement ``reference`` (same section) of the same seed."""
        engine = self.engine(subject, speed, dtype)
        req = request or self.request(subject)
        last: list[Any] = [None]

        def run() -> None:
            last[0] = run_local(engine, req)

        out = gm.time_calls(run, warmup=self.args.warmup, runs=self.args.runs)
        model = engine.models.current
        resolved = model.extras["speed"]
        out["settings"] = {k: v for k, v in resolved.describe().items() if k != "compile_cache"}
        out["dtype"] = DTYPE_NAMES[model.dtype]
        out["compile_seconds"] = (out["first_call_seconds"] - out["seconds"]) if resolved.compiled else None
        out["host_syncs_per_step"] = syncs_per_step(engine, req)
        if req.mode.value == "text-to-image":
            out["mfu"] = self.mfu(subject, out["seconds"])
        self.outputs[(section, name)] = last[0]
        if reference not in (None, name) and (section, reference) in self.outputs:
            lat, pic = self.outputs[(section, reference)]
            out["vs_plain"] = {**gm.latent_diff(last[0][0], lat), **gm.picture_diff(last[0][1], pic)}
        return out

    def mfu(self, subject: Subject, seconds: float) -> float | None:
        flops = subject.flops_per_image
        return flops / seconds / (self.args.peak_tflops * 1e12) if flops and seconds else None

    # -- the sections -------------------------------------------------------------------------
    def latency_section(self, section: str, name: str) -> None:
        """Diffusers eager, bildwerk's ladder (SD 1.5) or its fastest settings so far (the
        others), diffusers compiled."""
        subject = self.attempt(section, "build", lambda: self.subject(name))
        if subject is None:
            return
        xl = name == "sdxl"
        eager, comp = ("eager_xl", "compile_xl") if xl else ("eager", "compile")
        kw = self.diffusers_kwargs(subject)
        self.measure(section, "diffusers eager", eager,
                     lambda: self.diffusers_latency(subject, self._plain(subject), kw),
                     role="diffusers", variant="eager", task="txt2img")
        if name == "sd15":
            self.ladder(section, subject)
        else:
            best_eager = self.best_settings(eager=True)
            self.measure(section, f"bildwerk eager ({switches(best_eager)})", eager,
                         lambda: self.bildwerk_latency(section, "eager", subject, best_eager),
                         role="bildwerk", task="txt2img")
            if not self.args.skip_compile:
                best = self.compiled_settings()
                self.measure(section, f"bildwerk compiled ({switches(best)})", comp,
                             lambda: self.bildwerk_latency(section, "compiled", subject, best, reference="eager"),
                             role="bildwerk", task="txt2img")
                cleanup(reset_compiled=True)
        if self.args.skip_compile:
            self.skip(section, "diffusers compiled", "--skip-compile", role="diffusers", variant="compiled",
                      task="txt2img")
        else:
            self.measure(section, "diffusers compiled (channels_last + fused QKV + torch.compile(unet))", comp,
                         lambda: self.diffusers_compiled(subject, kw),
                         role="diffusers", variant="compiled", task="txt2img")
            cleanup(reset_compiled=True)

    def _plain(self, subject: Subject) -> Any:
        """``subject``'s pipeline as diffusers gets it: plain networks, all in this run's dtype
        (a bildwerk measurement in the other dtype, or in fp16 with its fp32 VAE, left it so)."""
        reset_components(subject.pipe)
        return subject.pipe.to(dtype=self.dtype)

    def diffusers_compiled(self, subject: Subject, call: dict[str, Any]) -> dict[str, Any]:
        pipe = self._plain(subject)
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        pipe.fuse_qkv_projections()
        eager_unet = pipe.unet
        pipe.unet = torch.compile(eager_unet)
        try:
            out = self.diffusers_latency(subject, pipe, call)
        finally:
            pipe.unet = eager_unet
            reset_components(pipe)
        out["compile_seconds"] = out["first_call_seconds"] - out["seconds"]
        return out

    def ladder(self, section: str, subject: Subject) -> None:
        """The speed switches one by one on SD 1.5; each compile rung on the fastest before it."""
        cuda = self.device.type == "cuda"
        plain = "bildwerk eager, plain"
        rungs: list[tuple[str, dict[str, Any], str, torch.dtype | None]] = [
            (plain, {}, "eager", None),
            ("+ channels_last", {"channels_last": True}, "eager", None),
            ("+ channels_last + fused QKV", {"channels_last": True, "fuse_qkv": True}, "eager", None),
        ]
        for backend in ("flash", "efficient", "cudnn", "math"):
            rungs.append((f"+ channels_last + fused QKV, SDPA {backend}",
                          {"channels_last": True, "fuse_qkv": True, "attention": backend},
                          "math" if backend == "math" else "eager", None))
        for label, kw, est, dtype in rungs:
            if not cuda and kw.get("attention") in ("flash", "efficient", "cudnn"):
                self.skip(section, label, "CUDA only", role="bildwerk", task="txt2img")
                continue
            self.measure(section, label, est,
                         lambda kw=kw, label=label, dtype=dtype: self.bildwerk_latency(
                             section, label, subject, settings(**kw), dtype=dtype, reference=plain),
                         role="bildwerk", task="txt2img", switches=kw, eager=True)
        other = {torch.bfloat16: torch.float16, torch.float16: torch.bfloat16}.get(self.dtype)
        best = self.best_settings(eager=True)
        if other is None or not cuda:
            self.skip(section, "fastest eager settings in the other half precision", "CUDA only",
                      role="bildwerk", task="txt2img")
        else:
            self.measure(section, f"fastest eager settings in {DTYPE_NAMES[other]}", "eager",
                         lambda: self.bildwerk_latency(section, "other dtype", subject, best, dtype=other,
                                                       reference=plain),
                         role="bildwerk", task="txt2img", other_dtype=True)
        if self.args.skip_compile:
            for label in ("+ compile unet", "+ compile unet+vae", "+ CUDA graphs (reduce-overhead)"):
                self.skip(section, label, "--skip-compile", role="bildwerk", task="txt2img")
            return
        from dataclasses import replace

        for label, change in (("+ compile unet", {"compile": "unet"}),
                              ("+ compile unet+vae", {"compile": "unet+vae"}),
                              ("+ CUDA graphs (reduce-overhead)", {"compile_mode": "reduce-overhead"})):
            start = self.best_settings(eager=False)
            if label.startswith("+ CUDA") and start.compile == "off":
                start = replace(start, compile="unet")
            speed = replace(start, **change)
            self.measure(section, label, "compile",
                         lambda speed=speed, label=label: self.bildwerk_latency(section, label, subject, speed,
                                                                                reference=plain),
                         role="bildwerk", task="txt2img",
                         switches={"compile": speed.compile, "compile_mode": speed.compile_mode})
            cleanup(reset_compiled=True)

    def best_settings(self, *, eager: bool) -> Any:
        """The SD 1.5 ladder's fastest settings in this run's dtype (eager ones only, or any);
        CUDA's defaults where nothing was measured."""
        entries = [e for e in self.result["sections"].get("sd15", []) if not e.get("other_dtype")
                   and (not eager or e.get("eager"))]
        best = gpu_report.best_bildwerk(entries)
        if best is None:
            return settings(channels_last=self.device.type == "cuda", fuse_qkv=self.device.type == "cuda")
        s = best["settings"]
        return settings(channels_last=s["channels_last"], fuse_qkv=s["fuse_qkv"], attention=s["attention"],
                        compile=s["compile"], compile_mode=s["compile_mode"])

    def compiled_settings(self) -> Any:
        """The fastest compiled settings measured, else the fastest eager ones + compile unet."""
        from dataclasses import replace

        best = self.best_settings(eager=False)
        return best if best.compile != "off" else replace(best, compile="unet")

    # -- the server ---------------------------------------------------------------------------
    def server_model(self) -> Path:
        """SD 1.5 saved as a diffusers folder (safetensors) for ``bildwerk serve``, once."""
        folder = self.tmp / "sd15-model"
        if not (folder / "model_index.json").is_file():
            self._plain(self.subject("sd15")).save_pretrained(folder, safe_serialization=True)
        return folder

    def server_env(self, speed: Any, home: Path, cache: Path) -> dict[str, str]:
        env = batching.child_env(home, self.args.threads, device=str(self.device))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
        for inherited in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
            env.pop(inherited, None)  # the server's own BILDWERK_COMPILE_CACHE decides
        # Rows per UNet call from --max-batch; the cells a call may hold the server measures
        # itself on CUDA (engines/budget.py; /ready shows them).
        env.update(speed_env(speed), BILDWERK_COMPILE_CACHE=str(cache), BILDWERK_DTYPE=self.args.dtype,
                   BILDWERK_MAX_BATCH=str(self.args.max_batch))
        for unset in ("BILDWERK_BATCH_CELLS", "BILDWERK_MAX_IN_FLIGHT"):
            env.pop(unset, None)
        return env

    def server(self, folder: Path, speed: Any, name: str, cache: Path) -> batching.Server:
        work = self.tmp / name
        work.mkdir(parents=True, exist_ok=True)
        timeout = max(30.0, self.args.budget_s - self.elapsed())
        return batching.Server(str(folder), work, self.server_env(speed, work / "home", cache),
                               command=[sys.executable, "-m", "bildwerk"], warmup=True, ready_timeout=timeout)

    def saved_model(self, section: str, first: str) -> Path | None:
        """The saved SD 1.5 folder a server section starts from; None (and ``first`` skipped, or
        the save's error recorded) when the budget is spent or the save failed."""
        if not self.fits("save"):
            self.skip(section, first, "budget")
            return None
        return self.attempt(section, "save the model", self.server_model)

    def server_section(self) -> None:
        section = "server"
        folder = self.saved_model(section, "throughput")
        if folder is None:
            return
        speed = self.best_settings(eager=self.args.skip_compile)
        subject = self.subject("sd15")
        levels: list[dict[str, Any]] = []

        def run() -> dict[str, Any]:
            server = self.server(folder, speed, "server", self.compile_cache)
            extra = {"width": subject.size, "height": subject.size, "guidance": self.args.guidance,
                     "prompt_options": {"language": "en", "translate": "off", "wildcards": False}}
            try:
                levels.extend(batching.bench_server(str(folder), self.args.steps, self.args.jobs, self.args.levels,
                                                    self.tmp, {}, server=server, extra=extra))
            except Exception as exc:
                raise RuntimeError(f"{exc}\nserver log:\n{server.log_tail()}") from exc
            return {"ready_seconds": server.ready_seconds, "ready": server.ready_body}  # its batch limits

        self.measure(section, "server start (model load + warm-up generation)", "server", run,
                     settings=speed_env(speed), jobs=self.args.jobs, max_batch=self.args.max_batch)
        for lv in levels:  # the rounds that ran, also when a later one failed
            self.result["sections"][section].append(
                {"name": f"{lv['concurrency']} concurrent client{'s' if lv['concurrency'] > 1 else ''}", **lv,
                 "mfu": self.mfu(subject, lv["seconds_per_image"]), "status": "ok"})
        self.write()

    def coldstart_section(self) -> None:
        section = "coldstart"
        folder = self.saved_model(section, "eager")
        if folder is None:
            return
        starts: list[tuple[str, Any, Path, str]] = [("eager", self.best_settings(eager=True),
                                                     self.tmp / "cold-cache-eager", "start")]
        if not self.args.skip_compile:
            best = self.compiled_settings()
            cache = self.tmp / "cold-cache"
            starts += [("compiled, empty compile cache", best, cache, "start_compile"),
                       ("compiled, the cache filled by the start before", best, cache, "start_compile")]
        for i, (label, speed, cache, est) in enumerate(starts):
            def run(speed: Any = speed, cache: Path = cache, i: int = i) -> dict[str, Any]:
                server = self.server(folder, speed, f"cold-{i}", cache)
                with server:
                    pass
                return {"ready_seconds": server.ready_seconds, "settings": speed_env(speed)}

            self.measure(section, label, est, run)
        if self.args.skip_compile:
            self.skip(section, "compiled, empty and then filled compile cache", "--skip-compile")

    # -- the rest: modes, VAE, previews, consistency --------------------------------------------
    def modes_section(self) -> None:
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

        from bildwerk.core.request import Mode

        section = "modes"
        subject = self.subject("sd15")
        speed = self.best_settings(eager=True)
        size = subject.size
        picture = sample_picture(size)
        kw = self.diffusers_kwargs(subject)
        # diffusers' img2img works at the picture's size, which is the native one here
        i2i = {k: v for k, v in kw.items() if k not in ("height", "width")} | {"image": picture, "strength": 0.75}
        self.measure(section, "image-to-image, diffusers eager", "eager",
                     lambda: self.diffusers_latency(subject, quiet(StableDiffusionImg2ImgPipeline.from_pipe(
                         self._plain(subject))), i2i),
                     role="diffusers", variant="eager", task="img2img")
        self.measure(section, f"image-to-image, bildwerk ({switches(speed)})", "eager",
                     lambda: self.bildwerk_latency(section, "img2img", subject, speed, request=self.request(
                         subject, mode=Mode.IMAGE_TO_IMAGE, image=picture, strength=0.75)),
                     role="bildwerk", task="img2img")
        # Only the masked region: a picture twice the native size, a mask a quarter of it wide.
        big, mask = sample_picture(2 * size), sample_mask(2 * size, size // 2)
        inp = {**kw, "image": big, "mask_image": mask, "strength": 1.0, "padding_mask_crop": 32}
        self.measure(section, f"only-masked inpaint ({2 * size} px picture, {size // 2} px mask), diffusers eager",
                     "eager",
                     lambda: self.diffusers_latency(subject, quiet(StableDiffusionInpaintPipeline.from_pipe(
                         self._plain(subject))), inp),
                     role="diffusers", variant="eager", task="inpaint")
        self.measure(section, f"only-masked inpaint, bildwerk ({switches(speed)})", "eager",
                     lambda: self.bildwerk_latency(section, "inpaint", subject, speed, request=self.request(
                         subject, mode=Mode.INPAINT, image=big, mask=mask, only_masked=True,
                         only_masked_padding=32)),
                     role="bildwerk", task="inpaint")

    def vae_section(self) -> None:
        """The engine's decoding (engines/decode.py) on SD 1.5's VAE: ``vae_batch`` 1 against 8
        pictures per decoder call, and a 2048 px picture whole against tiled (``vae_tile_above``)."""
        from bildwerk.engines.decode import decode_latents

        section = "vae"
        subject = self.subject("sd15")
        vae = self._plain(subject).vae
        ch, n = int(vae.config.latent_channels), 8

        def latents(batch: int, px: int) -> torch.Tensor:
            side = px // subject.scale
            return torch.randn((batch, ch, side, side), generator=torch.Generator("cpu").manual_seed(1)).to(
                self.device, vae.dtype)

        def timed(z: torch.Tensor, **kw: int) -> dict[str, Any]:
            out = gm.time_calls(lambda: decode_latents(vae, z, **kw), warmup=1, runs=min(self.args.runs, 3))
            out["seconds_per_picture"] = out["seconds"] / int(z.shape[0])
            return out

        z = latents(n, subject.size)
        for batch in (1, n):
            self.measure(section, f"{n} pictures at {subject.size} px, vae_batch {batch}", "vae",
                         lambda batch=batch: timed(z, batch=batch), vae_batch=batch)
        px = (2 if self.args.tiny else 4) * subject.size  # 2048 px for SD 1.5
        big = latents(1, px)
        self.measure(section, f"one {px} px picture, whole", "vae", lambda: timed(big, tile_above=0))
        self.measure(section, f"one {px} px picture, tiled (vae_tile_above below its size)", "vae",
                     lambda: timed(big, tile_above=px * px - 1))

    def preview_section(self) -> None:
        """A progress preview halfway through a generation: the fitted latent-to-colour map
        (engines/preview.py; its first call fits the map) against a decode of the first picture."""
        from dataclasses import replace

        section = "preview"
        subject = self.subject("sd15")
        base = self.best_settings(eager=True)
        for mode, label in (("approx", "approximate preview (latent-to-colour map)"),
                            ("vae", "VAE preview (a decode of the first picture)")):
            def run(mode: str = mode) -> dict[str, Any]:
                engine = self.engine(subject, replace(base, preview=mode))
                job = engine.prepare(self.request(subject))
                for _ in range(max(1, self.args.steps // 2)):
                    engine.step([job])
                out = gm.time_calls(lambda: engine.preview(job), warmup=1, runs=self.args.runs)
                engine.finish(job)
                return out

            self.measure(section, label, "small", run, preview=mode)

    def consistency_section(self) -> None:
        section = "consistency"
        subject = self.subject("sd15")
        speed = self.best_settings(eager=True)

        def run() -> dict[str, Any]:
            engine = self.engine(subject, speed)
            alone = run_local(engine, self.request(subject))
            jobs = [engine.prepare(self.request(subject, seed=self.args.seed + i)) for i in range(4)]
            while not all(j.done for j in jobs):
                engine.step([j for j in jobs if not j.done])
            batched = jobs[0].state.latents.detach().float().cpu()
            picture = engine.finish(jobs[0]).images[0]
            resolved = engine.models.current.extras["speed"]
            return {**gm.latent_diff(batched, alone[0]), **gm.picture_diff(picture, alone[1]),
                    "exact_batching": resolved.exact_batching}

        self.measure(section, f"seed alone vs first of a batch of 4 ({switches(speed)})", "eager", run)

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> None:
        for section in self.args.sections:
            if not self.fits("build"):
                self.skip(section, section, "budget")
                continue
            if section in ("sd15", "sdxl", "sd2"):
                self.latency_section(section, section)
                if section != "sd15":
                    self.drop(section)
            else:
                getattr(self, f"{section}_section")()
        self.write()


# -- helpers -----------------------------------------------------------------------------------
def switches(s: Any) -> str:
    """The switches of settings ``s`` in a few words, for measurement names."""
    on = [name for name, flag in (("channels_last", s.channels_last), ("fused QKV", s.fuse_qkv)) if flag]
    on.append(f"SDPA {s.attention}")
    if s.compile != "off":
        on.append(f"compile {s.compile}" + ("" if s.compile_mode == "default" else f", {s.compile_mode}"))
    return ", ".join(on)


def cleanup(*, reset_compiled: bool = False) -> None:
    gc.collect()
    if reset_compiled:
        import torch._dynamo as dynamo

        dynamo.reset()  # compiled graphs (and CUDA graph pools) of a measurement done
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def quiet(pipe: Any) -> Any:
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_local(engine: Any, request: Any) -> tuple[torch.Tensor, Any]:
    """One request through the engine's batch API: (its final latents, its first picture)."""
    job = engine.prepare(request)
    while not job.done:
        engine.step([job])
    latents = job.state.latents.detach().float().cpu()
    return latents, engine.finish(job).images[0]


def syncs_per_step(engine: Any, request: Any) -> float | None:
    """Host syncs per engine step, over one whole request (None on the CPU)."""
    if not gm.cuda():
        return None
    job = engine.prepare(request)
    syncs = steps = 0
    while not job.done:
        syncs += gm.count_host_syncs(lambda: engine.step([job])) or 0
        steps += 1
    engine.finish(job)
    return syncs / max(steps, 1)


def sample_picture(size: int):
    """A deterministic picture with structure (gradients and a disc), not a flat colour."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / size
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.05).astype(float)
    rgb = np.stack([x, y, 0.5 * (1 - x) + 0.5 * disc], axis=-1)
    return Image.fromarray((255 * rgb).astype("uint8"), "RGB")


def sample_mask(size: int, side: int):
    """A white square of ``side`` pixels (to repaint) in a black ``size`` mask, off centre."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    left, top = size // 5, size // 3
    ImageDraw.Draw(mask).rectangle((left, top, left + side - 1, top + side - 1), fill=255)
    return mask


def machine(threads: int) -> dict[str, Any]:
    import transformers

    info = {**batching.machine_info(threads), **gm.gpu_info(), "transformers": transformers.__version__}
    info["commit"] = info.get("commit") or os.environ.get("BENCH_COMMIT")  # the device's copy has no .git
    return info


def config(args: argparse.Namespace) -> dict[str, Any]:
    out = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    out["sections"] = list(args.sections)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--tiny", action="store_true", help="bildwerk.models.tiny's pipelines instead of full size")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"which, in order (default {','.join(SECTIONS)})")
    ap.add_argument("--budget-s", type=float, default=540.0,
                    help="wall seconds for the whole run; a measurement that no longer fits is skipped (default 540)")
    ap.add_argument("--out", type=Path, default=None, help="JSON (default bench/results/<date>-gpu-speed.json)")
    ap.add_argument("--steps", type=int, default=None, help=f"denoising steps (default {FULL['steps']}, --tiny {TINY['steps']})")
    ap.add_argument("--runs", type=int, default=None, help=f"timed runs per measurement (default {FULL['runs']})")
    ap.add_argument("--warmup", type=int, default=None, help=f"untimed runs first (default {FULL['warmup']})")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="default: cuda where there is one, else cpu")
    ap.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default: bf16 on CUDA, fp32 on the CPU")
    ap.add_argument("--skip-compile", action="store_true", help="no torch.compile measurements")
    ap.add_argument("--levels", default=None, help=f"server clients per round (default {FULL['levels']})")
    ap.add_argument("--jobs", type=int, default=None, help=f"jobs per server round (default {FULL['jobs']})")
    ap.add_argument("--max-batch", type=int, default=64, help="the server's BILDWERK_MAX_BATCH, UNet rows (default 64)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the server (default: the usable cores)")
    ap.add_argument("--peak-tflops", type=float, default=790.0,
                    help="the GPU's dense bf16 rate for MFU (default 790: an 8192³ matmul on this H200)")
    args = ap.parse_args(argv)
    preset = TINY if args.tiny else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    args.levels = [int(c) for c in str(args.levels).split(",") if c.strip()]
    if not args.levels or min(args.levels) < 1 or args.steps < 1 or args.runs < 1 or args.warmup < 0:
        ap.error("--levels, --steps and --runs must be positive")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.threads is None:
        from bildwerk.core.threads import usable_cpus

        args.threads = usable_cpus()
    if args.out is None:
        args.out = ROOT / "bench" / "results" / f"{datetime.date.today()}-gpu-speed{'-tiny' if args.tiny else ''}.json"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    bench = Bench(args)
    bench.run()
    print(gpu_report.markdown(bench.result))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
