"""The pool figures of docs/benchmarks.md: throughput (local against Ray on this machine),
resume after SIGKILL, and the diversity a plan buys over one repeated prompt.

    .venv/bin/python bench/pool.py                     # 200 images, every part (run it alone)
    .venv/bin/python bench/pool.py --images 40 --only local,resume

Parts:

- ``local`` / ``ray``: one offline plan ("Medicine and health", 60/20/20) of ``--images``
  pictures on the embedded default model, run by the local executor and by the Ray executor
  (a local Ray cluster on this machine, one actor) with the default gates on; images/hour by
  wall clock from the run's start (model load included) and from the first picture.
- ``resume``: ``bildwerk pool run`` of a 40-image plan in a subprocess, killed with SIGKILL
  three times at random points, then run to its end: pictures lost, pictures made twice
  (a picture recorded before a kill whose file changed afterwards), extra files.
- ``diversity``: Vendi score (over efficientnet-lite0 embeddings) of the planned pool against a
  pool of the same size (``--diversity-images``, 100) from one prompt with different seeds, both
  without the dedupe gate.

Writes ``bench/results/<date>-pool.json`` and ``.md`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import cpu_name  # bench/machine.py (scripts run from bench/)

ROOT = Path(__file__).resolve().parent.parent
BILDWERK = str(Path(sys.executable).parent / "bildwerk")
PARTS = ("local", "ray", "resume", "diversity")
TOPIC = "Medicine and health"


def planned(images: int, seed: int = 0) -> Any:
    from bildwerk.pool.planner import make_plan

    return make_plan(TOPIC, images=images, offline=True, seed=seed)


def throughput(plan: Any, executor: Any, out: Path) -> dict[str, Any]:
    from bildwerk.pool.folder import PoolFolder
    from bildwerk.pool.run import PoolRunner

    first: list[float] = []
    t0 = time.perf_counter()
    with PoolFolder(out, plan) as folder:
        check = getattr(executor, "check", None)
        if check is not None:
            check(plan)
        summary = PoolRunner(folder, executor, on_event=lambda e: first.append(time.perf_counter())
                             if e.type == "image" and not first else None).run()
    wall = time.perf_counter() - t0
    after_first = (time.perf_counter() - first[0]) if first else 0.0
    made = summary.made
    return {"outcome": summary.outcome, "made": made, "accepted": summary.accepted,
            "rejected": summary.report.get("totals", {}).get("rejected"),
            "seconds": round(wall, 2), "images_per_hour": round(made * 3600 / wall),
            "first_picture_after_s": round(first[0] - t0, 2) if first else None,
            "images_per_hour_after_first": round((made - 1) * 3600 / after_first) if after_first > 0 else None,
            "vendi_pool": summary.report.get("diversity", {}).get("pool", {}).get("vendi")}


def run_local(images: int, tmp: Path) -> dict[str, Any]:
    from bildwerk.pool.local import LocalExecutor

    return throughput(planned(images), LocalExecutor(), tmp / "local")


def run_ray(images: int, tmp: Path) -> dict[str, Any]:
    from bildwerk.pool.ray_executor import RayExecutor

    t0 = time.perf_counter()
    ex = RayExecutor(actors=1)
    res = throughput(planned(images), ex, tmp / "ray")
    res["with_cluster_start_s"] = round(time.perf_counter() - t0, 2)
    shutdown = getattr(ex, "shutdown", None)
    if shutdown is not None:
        shutdown()
    return res


def _accepted(out: Path) -> dict[str, int]:
    db = out / "manifest.sqlite"
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=10) as conn:
        return {i: 0 for (i,) in conn.execute("SELECT id FROM items WHERE status='accepted'")}


def _ended(out: Path) -> set[str]:
    with sqlite3.connect(out / "manifest.sqlite", timeout=10) as conn:
        return {i for (i,) in conn.execute("SELECT id FROM items WHERE status != 'failed'")}


def run_resume(tmp: Path, kills: int = 3, seed: int = 1) -> dict[str, Any]:
    plan = planned(40, seed=3)
    plan_path = plan.save(tmp / "resume-plan.yaml")
    out = tmp / "resume"
    env = {**os.environ, "OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    rng = random.Random(seed)
    seen: dict[str, int] = {}  # id -> mtime of its file when first seen
    killed_at: list[int] = []
    args = [BILDWERK, "pool", "run", str(plan_path), "--out", str(out), "--batch-rows", "8"]
    for _ in range(kills):
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        goal = len(seen) + rng.randint(3, 8)
        while proc.poll() is None and len(_accepted(out)) < goal:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = _accepted(out)
        killed_at.append(len(now))
        for i in now:
            seen.setdefault(i, next(out.glob(f"images/*/{i}.png")).stat().st_mtime_ns)
    res = subprocess.run(args, env=env, capture_output=True, text=True)
    final = _accepted(out)
    files = {p.stem for p in out.glob("images/*/*.png")}
    remade = sum(1 for i, m in seen.items() if next(out.glob(f"images/*/{i}.png")).stat().st_mtime_ns != m)
    planned_ids = {i.id for i in plan.items()}
    return {"kills": kills, "accepted_at_each_kill": killed_at, "exit_code": res.returncode,
            "planned": len(planned_ids), "accepted": len(final),
            "lost": len(planned_ids - _ended(out)),
            "made_twice": remade, "files_without_row": len(files - set(final)),
            "temp_files_left": len(list(out.rglob("*.tmp")))}


def run_diversity(images: int, tmp: Path) -> dict[str, Any]:
    from bildwerk.pool.folder import PoolFolder
    from bildwerk.pool.gates import Gates
    from bildwerk.pool.local import LocalExecutor
    from bildwerk.pool.plan import PoolGates, PoolKind, PoolLocation, PoolPlan, PoolPrompt
    from bildwerk.pool.report import write_report
    from bildwerk.pool.run import PoolRunner

    no_dedupe = PoolGates(nsfw=False, dedupe=False, topup=False)
    plan = planned(images).model_copy(update={"gates": no_dedupe})
    one = PoolPlan(pool="one-prompt", topic=TOPIC, images=images, gates=no_dedupe,
                   kinds=[PoolKind(kind="interiors", share=100, images=images, locations=[PoolLocation(
                       name="hospital", prompts=[PoolPrompt(prompt="a hospital room", seed=0, images=images)])])])
    ex = LocalExecutor()
    out: dict[str, Any] = {}
    for name, p in (("planned", plan), ("one_prompt", one)):
        with PoolFolder(tmp / f"div-{name}", p) as folder:
            PoolRunner(folder, ex, gates=Gates(no_dedupe), report=False).run()
            rep = write_report(folder, sheets=False)
        out[name] = {"images": rep["totals"]["accepted"], **rep["diversity"]["pool"],
                     "per_kind": {k: v["diversity"].get("vendi") for k, v in rep["kinds"].items()}}
    return out


def markdown(report: dict[str, Any]) -> str:
    r = report["results"]
    lines = [f"Pool benchmark, {report['date']}, {report['machine']}, commit {report['commit']}, "
             f"{report['images']} images, default model, offline plan of {TOPIC!r}", ""]
    if "local" in r or "ray" in r:
        lines += ["| executor | pictures | wall s | images/hour | first picture after s | images/hour after it |",
                  "|---|---|---|---|---|---|"]
        for name in ("local", "ray"):
            if name in r:
                x = r[name]
                lines.append(f"| {name} | {x['made']} | {x['seconds']} | {x['images_per_hour']} | "
                             f"{x['first_picture_after_s']} | {x['images_per_hour_after_first']} |")
        lines.append("")
    if "resume" in r:
        x = r["resume"]
        lines += [f"Resume: {x['kills']} SIGKILLs (at {x['accepted_at_each_kill']} accepted), then a full run "
                  f"(exit {x['exit_code']}): {x['accepted']} of {x['planned']} planned accepted, lost {x['lost']}, "
                  f"made twice {x['made_twice']}, files without a row {x['files_without_row']}, "
                  f"temp files {x['temp_files_left']}.", ""]
    if "diversity" in r:
        x = r["diversity"]
        lines += ["| pool | pictures | Vendi | mean cosine |", "|---|---|---|---|"]
        for name in ("planned", "one_prompt"):
            d = x[name]
            lines.append(f"| {name.replace('_', ' ')} | {d['images']} | {d.get('vendi')} | {d.get('mean_cosine')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--diversity-images", type=int, default=100, help="pictures in each pool of the diversity part")
    ap.add_argument("--only", default=",".join(PARTS))
    args = ap.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    date = datetime.date.today().isoformat()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bildwerk-pool-bench-") as tmp:
        for part in parts:
            t0 = time.perf_counter()
            fn = {"local": lambda: run_local(args.images, Path(tmp)), "ray": lambda: run_ray(args.images, Path(tmp)),
                  "resume": lambda: run_resume(Path(tmp)), "diversity": lambda: run_diversity(args.diversity_images, Path(tmp))}[part]
            results[part] = fn()
            print(f"{part}: {json.dumps(results[part])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    report = {"date": date, "machine": f"{cpu_name()}, {os.cpu_count()} cores", "commit": commit,
              "images": args.images, "diversity_images": args.diversity_images, "results": results}
    base = ROOT / "bench" / "results" / f"{date}-pool"
    base.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    md = markdown(report)
    base.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
