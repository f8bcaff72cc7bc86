"""Throughput of the server under concurrent requests, against sequential plain diffusers.

Run it alone on the machine (two torch processes on the same cores slow each other many
times over; see docs/benchmarks.md):

    .venv/bin/python bench/batching.py                       # the default model, 20 steps
    .venv/bin/python bench/batching.py --concurrency 1,4,16 --images 32 --steps 20
    .venv/bin/python bench/batching.py --smoke               # a tiny random model, < 1 minute

It only talks HTTP to the server, so it measures the worker as it is (cross-request
continuous batching, on by default; ``BILDWERK_MAX_BATCH=1`` in the environment turns it off
for an A/B). One run, in this order, nothing else running:

1. CLI (no server running): wall time of ``bildwerk --help`` (median of 5) and of
   ``bildwerk generate "ein roter Apfel" --steps S --seed 1 --out TMP/x.png``, process start
   to the PNG written (median of 3).
2. Baseline (no server running, in this process): N images one after another through
   diffusers' ``StableDiffusionPipeline.__call__`` on the components bildwerk loads, with
   the model's recommended guidance, its own scheduler, the same steps, sizes and prompts.
   Models conditioned by bildwerk's sentence encoder get ``prompt_embeds`` /
   ``negative_prompt_embeds``; the encoding is timed apart (``encode``) and counted in the
   baseline's seconds per image, since the server encodes too. CLIP models get ``prompt=``
   (encoding inside the call; ``encode`` is null).
3. Server: ``bildwerk serve --no-warmup`` in a subprocess on 127.0.0.1 with a fresh store,
   ready on GET /ready, warmed up with 2 jobs one after another and one round at the
   highest concurrency. Then for each concurrency C: C client threads, each submitting
   jobs (POST /api/v1/jobs) one after another and waiting for each on its event stream
   (GET /api/v1/jobs/{id}/events, the ``end`` event), N jobs in all.

Figures (JSON and markdown):

- ``images_per_second``: N / wall time (first submit to last end seen by a client);
  ``seconds_per_image`` is its inverse.
- ``latency_p50`` / ``latency_p95``: per job, submit to the end event, as a client sees it
  (includes queueing behind other clients' jobs and the event stream's delivery).
- ``server_run_p50`` / ``server_queue_p50``: from the job records (started_at - created_at
  and finished_at - started_at, the server's clock): where the latency went.
- ratios: server seconds per image at C=1 over the baseline's (target <= 1.05); server
  images/s at each C over the baseline's images/s (target >= 2 at C=16).

Torch threads: ``--threads`` (default: the usable cores) for this process and, through
``OMP_NUM_THREADS`` and ``BILDWERK_THREADS``, for the server and the CLI. Prompts come from a
40-prompt list in German, English, French, Korean and Russian, none repeated within a run
of up to 40 images (later ones get a number), so no encoding can be served from a cache.
Writes ``--json`` (default ``bench/results/<date>-batching.json``, ``-batching-smoke.json``
with ``--smoke``) and the same figures as markdown next to it (``.md``), and prints the
markdown. ``ratios.targets`` says which target each figure has and whether it was met.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from machine import cpu_name  # bench/machine.py (scripts run from bench/)

from bildwerk.core.threads import usable_cpus

ROOT = Path(__file__).resolve().parent.parent
BILDWERK = Path(sys.executable).parent / "bildwerk"

PROMPTS = [
    # German
    "ein roter Apfel auf einem Holztisch", "ein Leuchtturm an der Küste bei Sturm",
    "eine Katze schläft auf einem Sofa", "ein Segelboot auf einem ruhigen See",
    "ein verschneites Dorf in den Bergen", "eine Tasse Kaffee am Morgen",
    "ein alter Zug in einem Bahnhof", "ein Sonnenblumenfeld im Sommer",
    # English
    "a yellow taxi in a rainy street", "a lighthouse on a rocky cliff at dusk",
    "a bowl of ramen with chopsticks", "a red fox in a snowy forest",
    "an old wooden bridge over a river", "a hot air balloon over green hills",
    "a castle on a hill under a full moon", "a small robot watering plants",
    # French
    "une tour Eiffel sous la pluie", "un chat noir sur un toit",
    "un bouquet de tulipes dans un vase", "une plage de sable au coucher du soleil",
    "un croissant sur une assiette blanche", "une forêt d'automne avec un chemin",
    "un phare au bord de la mer", "une montagne enneigée au lever du jour",
    # Korean
    "눈 덮인 산 위의 작은 집", "바닷가의 등대와 파도", "빨간 사과 한 개",
    "벚꽃이 핀 공원의 벤치", "비 오는 밤의 도시 거리", "호수 위의 작은 배",
    "창가에 앉아 있는 고양이", "가을 숲속의 오솔길",
    # Russian
    "красное яблоко на столе", "маяк на берегу моря", "зимний лес и заснеженная дорога",
    "кошка спит на подоконнике", "старый деревянный дом в деревне", "парусник в открытом море",
    "чашка чая и книга", "подсолнухи под голубым небом",
]

CLI_GENERATE_REPEATS, CLI_HELP_REPEATS = 3, 5
WARMUP_SEQUENTIAL = 2
WARMUP_PROMPT = len(PROMPTS) * 10  # warm-up prompts: far from the measured ones' indices
SMOKE = {"steps": 2, "images": 4, "concurrency": "1,2"}
DEFAULTS = {"steps": 20, "images": 32, "concurrency": "1,4,16"}


def prompt_for(i: int) -> str:
    """The i-th prompt of a run: the list in order, then again with a number appended."""
    base = PROMPTS[i % len(PROMPTS)]
    return base if i < len(PROMPTS) else f"{base}, {i // len(PROMPTS) + 1}"


# -- machine and environment ---------------------------------------------------------------
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def machine_info(threads: int) -> dict[str, Any]:
    import diffusers
    import torch

    import bildwerk

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "usable_cores": usable_cpus(),
            "threads": threads, "python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "bildwerk": str(Path(bildwerk.__file__).parent),
            "commit": git_commit(),
            "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def child_env(home: Path, threads: int, device: str = "cpu") -> dict[str, str]:
    """Environment for the server and CLI subprocesses: offline, CPU (or ``device``), a fresh
    home, threads."""
    env = {**os.environ, "BILDWERK_HOME": str(home), "BILDWERK_DEVICE": device,
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": str(threads), "BILDWERK_THREADS": str(threads)}
    env.pop("BILDWERK_API_KEY", None)
    env.pop("BILDWERK_MODEL", None)  # --model or the embedded default, nothing else
    return env


def pct(values: list[float], p: int) -> float:
    """The p-th percentile (inclusive method; the median for p=50)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


# -- d) the command line -------------------------------------------------------------------
def time_command(args: list[str], env: dict[str, str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    return times


def bench_cli(model: str | None, steps: int, tmp: Path, env: dict[str, str], *, smoke: bool) -> dict[str, Any]:
    if not BILDWERK.is_file():
        raise SystemExit(f"no bildwerk command next to {sys.executable}; install the package (make venv)")
    out = tmp / "x.png"
    # --overwrite: each repeat writes the same file (the CLI never replaces one unasked)
    gen = [str(BILDWERK), "generate", "ein roter Apfel", "--steps", str(steps), "--seed", "1", "--out", str(out),
           "--overwrite"]
    if model:
        gen += ["--model", model]
    help_times = time_command([str(BILDWERK), "--help"], env, 1 if smoke else CLI_HELP_REPEATS)
    gen_times = time_command(gen, env, 1 if smoke else CLI_GENERATE_REPEATS)
    if not out.is_file():
        raise RuntimeError(f"bildwerk generate wrote no {out}")
    return {"help_seconds": statistics.median(help_times), "help_runs": help_times,
            "generate_seconds": statistics.median(gen_times), "generate_runs": gen_times}


# -- b) the baseline -----------------------------------------------------------------------
def bench_diffusers(model_ref: str | None, steps: int, images: int, threads: int) -> tuple[dict, dict]:
    """N images one after another through StableDiffusionPipeline.__call__; (figures, model info)."""
    import torch

    from bildwerk.engines.conditioning import encode_prompts
    from bildwerk.models.loader import ModelManager, recommended_guidance

    torch.set_num_threads(threads)
    manager = ModelManager(device="cpu")
    model = manager.get(model_ref)
    pipe = model.pipe
    pipe.set_progress_bar_config(disable=True)
    guidance = recommended_guidance(model_ref)
    size = model.native_size
    info = {"name": model.name, "family": model.family, "size": size, "guidance": guidance,
            "scheduler": type(pipe.scheduler).__name__}

    def one(i: int) -> tuple[float | None, float]:
        prompt = prompt_for(i)
        t0 = time.perf_counter()
        if model.family == "sentence":
            cond = encode_prompts(model, prompt, "", num_images=1, do_cfg=guidance > 1.0, width=size, height=size)
            kwargs: dict[str, Any] = {"prompt_embeds": cond.cond, "negative_prompt_embeds": cond.uncond}
        else:
            kwargs = {"prompt": prompt}
        t1 = time.perf_counter()
        g = torch.Generator("cpu").manual_seed(i)
        pipe(num_inference_steps=steps, guidance_scale=guidance, height=size, width=size, generator=g,
             output_type="pil", **kwargs)
        t2 = time.perf_counter()
        return (t1 - t0 if model.family == "sentence" else None), t2 - t1

    one(WARMUP_PROMPT)  # warm up
    encode, call = [], []
    t = time.perf_counter()
    for i in range(images):
        e, c = one(i)
        if e is not None:
            encode.append(e)
        call.append(c)
    wall = time.perf_counter() - t
    manager.unload()  # the weights go when this function returns: the server has the memory
    figures = {"images": images, "wall_seconds": wall, "images_per_second": images / wall,
               "seconds_per_image": wall / images,
               "encode_seconds_p50": statistics.median(encode) if encode else None,
               "call_seconds_p50": statistics.median(call)}
    return figures, info


# -- a) the server -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``bildwerk serve`` in a subprocess; ``with`` stops it (SIGTERM, then kill).

    ``command`` runs bildwerk (default: the ``bildwerk`` script next to this Python; where the
    package is not installed, ``[python, "-m", "bildwerk"]``); ``warmup`` keeps the server's
    own readiness generation; ``ready_seconds``: process start to a ready /ready, whose answer
    is ``ready_body``."""

    def __init__(self, model: str | None, tmp: Path, env: dict[str, str], *, command: list[str] | None = None,
                 warmup: bool = False, ready_timeout: float = 180.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "server.log"
        args = [*(command or [str(BILDWERK)]), "serve", "--port", str(self.port), "--store", str(tmp / "store")]
        if not warmup:
            args.append("--no-warmup")
        if model:
            args += ["--model", model]
        self.args, self.env, self.ready_timeout = args, env, ready_timeout
        self.proc: subprocess.Popen | None = None
        self.ready_seconds: float | None = None
        self.ready_body: dict[str, Any] | None = None  # the first ready answer of /ready

    def __enter__(self) -> Server:
        t = time.perf_counter()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.__exit__()
            raise
        self.ready_seconds = time.perf_counter() - t
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self) -> str:
        return self.log.read_text("utf-8", errors="replace")[-3000:]

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(self.url + "/ready", timeout=5)
                if r.status_code == 200 and r.json().get("status") == "ready":
                    self.ready_body = r.json()
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout:.0f} s ({last}):\n{self.log_tail()}")


@dataclass
class JobTime:
    latency: float  # submit to the end event, client clock
    queue: float  # started_at - created_at, server clock
    run: float  # finished_at - started_at, server clock


def run_job(client: httpx.Client, prompt: str, seed: int, steps: int,
            extra: dict[str, Any] | None = None) -> tuple[str, float]:
    """Submit one job (``extra``: more request fields) and wait for its end on the event
    stream; (id, latency). Raises unless it succeeded."""
    t = time.perf_counter()
    r = client.post("/api/v1/jobs", json={"prompt": prompt, "steps": steps, "seed": seed, **(extra or {})})
    if r.status_code != 202:
        raise RuntimeError(f"POST /api/v1/jobs: {r.status_code} {r.text[:500]}")
    job_id = r.json()["id"]
    end = None
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as events:
        event = None
        for line in events.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "end":
                end = json.loads(line.split(":", 1)[1])
                break
    latency = time.perf_counter() - t
    if end is None or end.get("status") != "succeeded":
        raise RuntimeError(f"job {job_id} did not succeed: {end}")
    return job_id, latency


def run_level(url: str, concurrency: int, images: int, steps: int, first_prompt: int,
              extra: dict[str, Any] | None = None) -> tuple[float, list[JobTime]]:
    """C threads, each running jobs one after another, ``images`` jobs in all; (wall, times).
    The job records (server-side times) are read after the wall clock stops."""
    counter = itertools.count()
    lock = threading.Lock()
    done: dict[str, float] = {}
    errors: list[BaseException] = []

    def client_thread() -> None:
        with httpx.Client(base_url=url, timeout=httpx.Timeout(60.0, read=600.0)) as client:
            while not errors:
                with lock:
                    i = next(counter)
                if i >= images:
                    return
                try:
                    job_id, latency = run_job(client, prompt_for(first_prompt + i), first_prompt + i, steps, extra)
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    errors.append(exc)
                    return
                with lock:
                    done[job_id] = latency

    threads = [threading.Thread(target=client_thread, name=f"client-{k}") for k in range(concurrency)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    if errors:
        raise errors[0]
    times = []
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for job_id, latency in done.items():
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            times.append(JobTime(latency, job["started_at"] - job["created_at"],
                                 job["finished_at"] - job["started_at"]))
    return wall, times


def level_figures(concurrency: int, wall: float, times: list[JobTime]) -> dict[str, Any]:
    lat = [j.latency for j in times]
    return {"concurrency": concurrency, "images": len(times), "wall_seconds": wall,
            "images_per_second": len(times) / wall, "seconds_per_image": wall / len(times),
            "latency_p50": pct(lat, 50), "latency_p95": pct(lat, 95),
            "server_queue_p50": statistics.median(j.queue for j in times),
            "server_run_p50": statistics.median(j.run for j in times)}


def bench_server(model: str | None, steps: int, images: int, levels: list[int], tmp: Path,
                 env: dict[str, str], *, server: Server | None = None,
                 extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The concurrency levels against ``server`` (default: a ``bildwerk serve`` started here);
    ``extra``: request fields every job carries."""
    results = []
    with server or Server(model, tmp, env) as server:
        try:
            # Warm-up: the model loads on the first job; a batching worker sees its largest batch.
            run_level(server.url, 1, WARMUP_SEQUENTIAL, steps, WARMUP_PROMPT, extra)
            run_level(server.url, max(levels), max(levels), steps, WARMUP_PROMPT + WARMUP_SEQUENTIAL, extra)
            for k, c in enumerate(levels):
                wall, times = run_level(server.url, c, images, steps, k * images, extra)
                results.append(level_figures(c, wall, times))
                print(f"  C={c}: {results[-1]['images_per_second']:.3f} images/s", file=sys.stderr)
        except Exception:
            print(f"server log (tail):\n{server.log_tail()}", file=sys.stderr)
            raise
    return results


# -- report --------------------------------------------------------------------------------
def ratios(base: dict, levels: list[dict], cli: dict) -> dict[str, Any]:
    by_c = {lv["concurrency"]: lv for lv in levels}
    out: dict[str, Any] = {
        "throughput_over_diffusers": {str(c): lv["images_per_second"] / base["images_per_second"]
                                      for c, lv in by_c.items()},
    }
    targets: dict[str, Any] = {}
    if 1 in by_c:
        r = by_c[1]["seconds_per_image"] / base["seconds_per_image"]
        out["c1_seconds_per_image_over_diffusers"] = r
        targets["c1_seconds_per_image_over_diffusers"] = {"value": r, "target": "<= 1.05", "met": r <= 1.05}
    if 16 in by_c:
        r = out["throughput_over_diffusers"]["16"]
        targets["throughput_c16_over_diffusers"] = {"value": r, "target": ">= 2", "met": r >= 2}
    targets["cli_help_seconds"] = {"value": cli["help_seconds"], "target": "< 1", "met": cli["help_seconds"] < 1}
    out["targets"] = targets
    return out


def runs(times: list[float]) -> str:
    return f"{len(times)} run{'s' if len(times) != 1 else ''}"


def markdown(result: dict[str, Any]) -> str:
    m, cfg, base, cli, rat = (result[k] for k in ("machine", "config", "diffusers", "cli", "ratios"))
    thr = rat["throughput_over_diffusers"]
    enc = base["encode_seconds_p50"]
    lines = [
        f"**bench/batching.py, {m['date_utc']}**: {m['cpu']}, {m['usable_cores']} usable cores "
        f"({m['cores']} in all), torch {m['torch']}, diffusers {m['diffusers']}, {m['threads']} threads, "
        f"commit {m['commit'] or 'unknown'}.",
        f"Model {cfg['model_name']} ({cfg['family']}, {cfg['size']}x{cfg['size']}), {cfg['steps']} steps, "
        f"{cfg['scheduler']}, guidance {cfg['guidance']:g}, {cfg['images']} images per row"
        + (" (smoke run: the numbers mean nothing)" if cfg["smoke"] else "") + ".",
        "",
        "| path | images/s | seconds per image | latency p50 | latency p95 | server run p50 | throughput ratio to diffusers |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| diffusers `StableDiffusionPipeline`, one after another "
        f"({'encode ' + format(enc, '.3f') + ' s + ' if enc is not None else ''}call "
        f"{base['call_seconds_p50']:.3f} s) | {base['images_per_second']:.3f} | {base['seconds_per_image']:.3f} "
        "| | | | 1.00 |",
    ]
    for lv in result["server"]:
        lines.append(
            f"| server, {lv['concurrency']} client{'s' if lv['concurrency'] > 1 else ''} | "
            f"{lv['images_per_second']:.3f} | {lv['seconds_per_image']:.3f} | {lv['latency_p50']:.3f} | "
            f"{lv['latency_p95']:.3f} | {lv['server_run_p50']:.3f} | {thr[str(lv['concurrency'])]:.2f} |")
    lines += [
        "",
        "| command | seconds (median) |",
        "|---|---:|",
        f"| `bildwerk --help` ({runs(cli['help_runs'])}) | {cli['help_seconds']:.3f} |",
        f"| `bildwerk generate \"ein roter Apfel\" --steps {cfg['steps']}`, start to PNG "
        f"({runs(cli['generate_runs'])}) | {cli['generate_seconds']:.3f} |",
        "",
        "| target | value | goal | met |",
        "|---|---:|---|---|",
    ]
    for name, t in rat["targets"].items():
        lines.append(f"| {name} | {t['value']:.3f} | {t['target']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default=None, help="model folder (default: the embedded default model)")
    ap.add_argument("--steps", type=int, default=None, help=f"denoising steps (default {DEFAULTS['steps']})")
    ap.add_argument("--images", type=int, default=None,
                    help=f"images per concurrency level and for the baseline (default {DEFAULTS['images']})")
    ap.add_argument("--concurrency", default=None, help=f"client threads per level (default {DEFAULTS['concurrency']})")
    ap.add_argument("--threads", type=int, default=usable_cpus(), help="torch threads (default: the usable cores)")
    ap.add_argument("--json", type=Path, default=None, help="output (default bench/results/<date>-batching.json)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"check the script works in well under a minute: a tiny random model unless --model, "
                         f"{SMOKE['steps']} steps, {SMOKE['images']} images, concurrency {SMOKE['concurrency']}, "
                         "one CLI run each")
    args = ap.parse_args(argv)
    preset = SMOKE if args.smoke else DEFAULTS
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.levels = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if not args.levels or min(args.levels) < 1:
        ap.error("--concurrency wants positive integers, e.g. 1,4,16")
    if args.images < max(args.levels):
        ap.error(f"--images ({args.images}) must be at least the highest concurrency ({max(args.levels)})")
    if args.steps < 1 or args.threads < 1:
        ap.error("--steps and --threads must be positive")
    if args.json is None:
        args.json = ROOT / "bench" / "results" / f"{datetime.date.today()}-batching{'-smoke' if args.smoke else ''}.json"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    machine = machine_info(args.threads)
    with tempfile.TemporaryDirectory(prefix="bildwerk-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model = args.model
        if args.smoke and model is None:
            from bildwerk.models.tiny import save_tiny_model

            model = str(save_tiny_model(tmp / "tiny-sd", "sd"))
        env = child_env(tmp / "home", args.threads)
        os.environ["BILDWERK_DEVICE"] = "cpu"
        os.environ.pop("BILDWERK_MODEL", None)  # this process loads the same model as the server

        print("CLI ...", file=sys.stderr)
        cli = bench_cli(model, args.steps, tmp, env, smoke=args.smoke)
        print("diffusers baseline ...", file=sys.stderr)
        base, info = bench_diffusers(model, args.steps, args.images, args.threads)
        print("server ...", file=sys.stderr)
        levels = bench_server(model, args.steps, args.images, args.levels, tmp, env)

    result: dict[str, Any] = {
        "benchmark": "batching",
        "machine": machine,
        "config": {"model": args.model or ("tiny-sd (random)" if args.smoke else "default"),
                   "model_name": info["name"], "family": info["family"], "size": info["size"],
                   "steps": args.steps, "guidance": info["guidance"], "scheduler": info["scheduler"],
                   "images": args.images, "concurrency": args.levels, "smoke": args.smoke,
                   "warmup_jobs": WARMUP_SEQUENTIAL + max(args.levels)},
        "cli": cli,
        "diffusers": base,
        "server": levels,
    }
    result["ratios"] = ratios(base, levels, cli)
    md = markdown(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")
    args.json.with_suffix(".md").write_text(md, "utf-8")
    print(md)
    print(f"wrote {args.json} and {args.json.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
