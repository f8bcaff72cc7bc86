"""Load on a real server: a burst over the queue bound, steady clients, big images; the
latency clients see and how fast /health answers meanwhile (issue 14, docs/reliability.md).

    .venv/bin/python bench/load.py                 # ~3 minutes on 2 cores
    .venv/bin/python bench/load.py --quick         # ~1 minute, smaller phases

Run it alone on the machine. The server is ``bildwerk serve`` in a subprocess on 127.0.0.1,
on a tiny random-weight SD model (models/tiny.py), so the figures measure the service (queue,
event loop, store, decoding), not a model's speed. Phases, one after another:

1. burst: ``3 x max_queue`` submissions at once (POST /api/v1/jobs, 2 steps). Counted: 202s,
   429s (each must carry Retry-After), anything else; then every accepted job is waited for:
   ``lost`` = accepted jobs that did not succeed.
2. steady: 16 client threads, each sending synchronous A1111 txt2img calls one after another
   for ``--seconds``; latency p50/p95 per call.
3. big images: 2 client threads sending 4096x4096 PNGs (about 12 MB each, as base64 in JSON
   to A1111 img2img and as multipart uploads to OpenAI edits, output 64x64) for ``--seconds``.

During every phase a prober (a process of its own) asks GET /health every 20 ms; its p50/p95/p99/max per phase are
the event loop's health (target: p99 under 50 ms under the big-image load).
Writes ``bench/results/<date>-load.json`` and ``.md`` (``--json`` to choose) and prints the
markdown.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import io
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from machine import cpu_name  # bench/machine.py (scripts run from bench/)
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the server harness the tests use
from harness.server import ServerProcess  # noqa: E402


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000, 1)


def summary(latencies: list[float]) -> dict[str, Any]:
    return {"n": len(latencies), "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95),
            "p99_ms": pct(latencies, 99),
            "max_ms": round(max(latencies) * 1000, 1) if latencies else None}


def _probe(url: str, interval: float, stop: Any, out: Any) -> None:
    latencies, failures = [], 0
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                ok = c.get("/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t)
            else:
                failures += 1
            stop.wait(interval)
    out.send((latencies, failures))


class HealthProbe:
    """GET /health every ``interval`` seconds from a process of its own (the clients' threads
    in this one would share its GIL and slow the probe, not the server)."""

    def __init__(self, url: str, interval: float = 0.02) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_probe, args=(url, interval, self._stop, send), daemon=True)
        self.latencies: list[float] = []
        self.failures = 0

    def __enter__(self) -> HealthProbe:
        self._proc.start()
        time.sleep(1.0)  # the probe process is up before the load starts
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.latencies, self.failures = self._recv.recv()
        self._proc.join()

    def figures(self) -> dict[str, Any]:
        return {**summary(self.latencies), "failures": self.failures}


def big_png(side: int = 4096, seed: int = 0) -> bytes:
    """A photo-like picture: smooth gradients plus mild noise (PNG about 12 MB at 4096 px)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    base = np.stack([x * 200, y * 180, (x + y) * 90], axis=-1)
    noisy = base + rng.normal(0, 3, base.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def run_threads(target: Callable[[int], None], count: int) -> float:
    """``target(0..count-1)`` in threads at once; the seconds until the last one ended."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def burst(srv: ServerProcess, max_queue: int) -> dict[str, Any]:
    n = 3 * max_queue
    answers: list[httpx.Response | Exception] = []
    lock = threading.Lock()
    gate = threading.Barrier(n)

    def submit(i: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            gate.wait()
            try:
                r: httpx.Response | Exception = c.post("/api/v1/jobs", json={"prompt": f"burst {i}", "steps": 2, "seed": i})
            except httpx.HTTPError as exc:
                r = exc
        with lock:
            answers.append(r)

    submit_s = run_threads(submit, n)
    accepted = [r.json()["id"] for r in answers if isinstance(r, httpx.Response) and r.status_code == 202]
    refused = [r for r in answers if isinstance(r, httpx.Response) and r.status_code == 429]
    other = [r if isinstance(r, Exception) else r.status_code for r in answers
             if not (isinstance(r, httpx.Response) and r.status_code in (202, 429))]
    succeeded = 0
    with srv.client() as c:
        for job_id in accepted:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                status = c.get(f"/api/v1/jobs/{job_id}").json()["status"]
                if status in ("succeeded", "failed", "cancelled"):
                    succeeded += status == "succeeded"
                    break
                time.sleep(0.1)
    return {"sent": n, "accepted": len(accepted), "refused_429": len(refused),
            "refused_with_retry_after": sum("retry-after" in r.headers for r in refused),
            "other": [str(o) for o in other], "lost": len(accepted) - succeeded,
            "submit_seconds": round(submit_s, 2)}


def clients(srv: ServerProcess, count: int, seconds: float, call: Callable[[httpx.Client, int], httpx.Response]) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def loop(k: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=600) as c:
            i = 0
            while time.monotonic() < end:
                t = time.perf_counter()
                status = call(c, k * 10_000 + i).status_code
                dt = time.perf_counter() - t
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append(dt)
                i += 1

    run_threads(loop, count)
    return {"clients": count, "seconds": seconds, "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "calls_per_second": round(sum(statuses.values()) / seconds, 2), **summary(latencies)}


def run(quick: bool, seconds: float) -> dict[str, Any]:
    from bildwerk.models.tiny import save_tiny_model

    max_queue = 16 if quick else 32
    with tempfile.TemporaryDirectory(prefix="bildwerk-load-") as tmp:
        root = Path(tmp)
        model = save_tiny_model(root / "sd", "sd")
        srv = ServerProcess(root, str(model), max_queue=max_queue).start()
        try:
            srv.wait_ready()
            results: dict[str, Any] = {}
            with HealthProbe(srv.url) as idle:
                time.sleep(2)
            results["idle"] = {"health": idle.figures()}
            with HealthProbe(srv.url) as probe:
                results["burst"] = burst(srv, max_queue)
            results["burst"]["health"] = probe.figures()

            def txt2img(c: httpx.Client, i: int) -> httpx.Response:
                return c.post("/sdapi/v1/txt2img", json={"prompt": f"steady {i}", "steps": 2, "seed": i})

            with HealthProbe(srv.url) as probe:
                results["steady"] = clients(srv, 16, seconds, txt2img)
            results["steady"]["health"] = probe.figures()

            png = big_png(2048 if quick else 4096)
            text = base64.b64encode(png).decode()

            def big(c: httpx.Client, i: int) -> httpx.Response:
                if i % 2:
                    return c.post("/v1/images/edits", data={"prompt": "a lake", "size": "64x64"},
                                  files={"image": ("big.png", png, "image/png")})
                return c.post("/sdapi/v1/img2img", json={"prompt": "a lake", "steps": 2, "width": 64, "height": 64,
                                                         "init_images": [text], "denoising_strength": 0.5})

            with HealthProbe(srv.url) as probe:
                results["big_images"] = clients(srv, 2, seconds, big)
            results["big_images"].update(png_bytes=len(png), side=2048 if quick else 4096, health=probe.figures())
            log = srv.log.read_text(errors="replace")
            results["server_errors_in_log"] = log.count("unhandled error")
        finally:
            srv.stop()
    return results


def markdown(report: dict[str, Any]) -> str:
    r = report["results"]
    lines = [f"# Load ({report['date']}, {report['machine']['cpu']}, {report['machine']['cores']} cores)", "",
             "| phase | calls | statuses | client p50 / p95 (ms) | /health p50 / p95 / p99 / max (ms) |",
             "|---|---|---|---|---|"]
    for phase in ("idle", "burst", "steady", "big_images"):
        p = r[phase]
        h = p["health"]
        if phase == "burst":
            calls, statuses, lat = p["sent"], f"202: {p['accepted']}, 429: {p['refused_429']}, other: {len(p['other'])}", "-"
        elif phase == "idle":
            calls, statuses, lat = "-", "-", "-"
        else:
            calls, statuses, lat = sum(p["statuses"].values()), p["statuses"], f"{p['p50_ms']} / {p['p95_ms']}"
        lines.append(f"| {phase} | {calls} | {statuses} | {lat} | {h['p50_ms']} / {h['p95_ms']} / {h['p99_ms']} / {h['max_ms']} |")
    b = r["burst"]
    lines += ["", f"Burst: {b['sent']} at once over a queue of {report['max_queue']}: {b['accepted']} accepted, "
              f"{b['refused_429']} refused with 429 ({b['refused_with_retry_after']} with Retry-After), "
              f"{b['lost']} accepted jobs lost. Big images: {r['big_images']['side']} px PNGs of "
              f"{r['big_images']['png_bytes'] / 1e6:.1f} MB. Unhandled errors in the server log: "
              f"{r['server_errors_in_log']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller phases (2048 px images, queue 16)")
    ap.add_argument("--seconds", type=float, default=None, help="length of the steady and big-image phases")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    date = datetime.date.today().isoformat()
    report = {"date": date, "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
              "max_queue": 16 if args.quick else 32, "results": run(args.quick, seconds)}
    out = args.json or ROOT / "bench" / "results" / f"{date}-load{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
