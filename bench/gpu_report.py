"""bench/gpu_speed.py's result: ratios to diffusers, the targets, the JSON and the markdown.

``annotate`` derives what follows from the measurements (so a partial run, rewritten after
every measurement, is always consistent); ``write`` puts the JSON and the markdown next to
each other atomically (a run killed at its time limit leaves the last complete pair).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Issue 19's targets on the H200 (full-size models; no meaning for --tiny runs).
TARGETS = {
    "sd15_batch1_seconds": ("sd15", "<=", 0.25, "SD 1.5 512 px, 30 steps DDIM, CFG 7.5, batch 1"),
    "sdxl_batch1_seconds": ("sdxl", "<=", 0.9, "SDXL 1024 px, 30 steps, batch 1"),
    "sd15_c16_images_per_second": ("server", ">=", 9.0, "SD 1.5 through the server, 16 concurrent"),
}
LATENCY_SECTIONS = ("sd15", "sdxl", "sd2", "modes")


def ok(entry: dict[str, Any]) -> bool:
    return entry.get("status") == "ok"


def _find(entries: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for e in entries:
        if ok(e) and all(e.get(k) == v for k, v in match.items()):
            return e
    return None


def best_bildwerk(entries: list[dict[str, Any]], task: str = "txt2img", **match: Any) -> dict[str, Any] | None:
    """The fastest successful bildwerk measurement of ``task`` among ``entries``."""
    found = [e for e in entries if ok(e) and e.get("role") == "bildwerk" and e.get("task") == task
             and all(e.get(k) == v for k, v in match.items()) and e.get("seconds")]
    return min(found, key=lambda e: e["seconds"]) if found else None


def annotate(result: dict[str, Any]) -> None:
    """Ratios of every bildwerk latency to diffusers' (eager and compiled) of the same task in
    the same section, the throughput's ratio to sequential diffusers, and the targets."""
    sections = result["sections"]
    for name in LATENCY_SECTIONS:
        entries = sections.get(name, [])
        for e in entries:
            if not ok(e) or e.get("role") != "bildwerk":
                continue
            for variant in ("eager", "compiled"):
                base = _find(entries, role="diffusers", variant=variant, task=e.get("task"))
                e[f"time_over_diffusers_{variant}"] = e["seconds"] / base["seconds"] if base else None
    base = _find(sections.get("sd15", []), role="diffusers", variant="eager", task="txt2img")
    for e in sections.get("server", []):
        if ok(e) and e.get("images_per_second") and base:
            e["throughput_over_diffusers_eager"] = e["images_per_second"] * base["seconds"]
    result["targets"] = {} if result["config"].get("tiny") else targets(sections)


def targets(sections: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (section, op, goal, what) in TARGETS.items():
        if section == "server":
            e = _find(sections.get("server", []), concurrency=16)
            value = e["images_per_second"] if e else None
        else:
            e = best_bildwerk(sections.get(section, []))
            value = e["seconds"] if e else None
        met = None if value is None else (value <= goal if op == "<=" else value >= goal)
        out[key] = {"what": what, "value": value, "target": f"{op} {goal:g}", "met": met,
                    "measurement": e["name"] if e else None}
    return out


# -- markdown ---------------------------------------------------------------------------------
Column = tuple[str, str, Callable[[Any], str]]


def _f(digits: int) -> Callable[[Any], str]:
    return lambda v: f"{v:.{digits}f}"


def _g(v: Any) -> str:
    return f"{v:.2g}"


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%"


def _vs_plain(v: Any) -> str:
    if not isinstance(v, dict):
        return ""
    if v.get("finite") is False:
        return "not finite"
    px, rel = v.get("pixel_max_abs"), v.get("latent_rel_l2")
    return f"{px} / {rel:.2g}" if px is not None and rel is not None else ""


LATENCY: list[Column] = [
    ("seconds", "s (median)", _f(3)), ("first_call_seconds", "first call s", _f(2)),
    ("peak_memory_gib", "peak GiB", _f(2)), ("time_over_diffusers_eager", "× diffusers eager", _f(2)),
    ("time_over_diffusers_compiled", "× diffusers compiled", _f(2)), ("mfu", "MFU", _pct),
    ("host_syncs_per_step", "host syncs / step", _f(1)), ("vs_plain", "vs plain eager: px max / latent rel", _vs_plain),
]
COLUMNS: dict[str, list[Column]] = {
    "sd15": LATENCY, "sdxl": LATENCY, "sd2": LATENCY, "modes": LATENCY,
    "server": [("ready_seconds", "start to /ready s", _f(1)), ("images_per_second", "images/s", _f(2)), ("seconds_per_image", "s / image", _f(3)),
               ("latency_p50", "latency p50", _f(3)), ("latency_p95", "latency p95", _f(3)),
               ("server_run_p50", "server run p50", _f(3)),
               ("throughput_over_diffusers_eager", "× diffusers eager throughput", _f(2)), ("mfu", "MFU", _pct)],
    "vae": [("seconds", "s (median)", _f(3)), ("seconds_per_picture", "s / picture", _f(3)),
            ("peak_memory_gib", "peak GiB", _f(2))],
    "preview": [("seconds", "s per preview", _f(4)), ("peak_memory_gib", "peak GiB", _f(2))],
    "consistency": [("latent_max_abs", "latent max abs diff", _g), ("latent_rel_l2", "latent rel L2", _g),
                    ("pixel_max_abs", "pixel max abs diff", str), ("pixel_mean_abs", "pixel mean abs diff", _f(3))],
    "coldstart": [("ready_seconds", "start to /ready s", _f(1))],
}
TITLES = {
    "sd15": "SD 1.5 latency, batch 1, and the speed switches", "server": "SD 1.5 through the server",
    "sdxl": "SDXL latency, batch 1", "sd2": "SD 2.x 768-v latency, batch 1",
    "modes": "SD 1.5 image-to-image and only-masked inpainting, batch 1", "vae": "VAE decoding",
    "preview": "Progress previews", "consistency": "Batch consistency (same seed alone and in a batch of 4)",
    "coldstart": "Cold start of `bildwerk serve` (process start to /ready)",
}


def _status(e: dict[str, Any]) -> str:
    status = str(e.get("status", ""))
    if status == "error":
        return "error: " + str(e.get("error", "")).splitlines()[0][:120].replace("|", "/")
    return status


def markdown(result: dict[str, Any]) -> str:
    m, cfg = result["machine"], result["config"]
    where = f"{m.get('gpu', m.get('cpu', '?'))}" + (f", driver {m['driver']}" if m.get("driver") else "")
    lines = [
        f"**bench/gpu_speed.py, {m.get('date_utc')}**: {where}, torch {m.get('torch')} (CUDA {m.get('cuda')}), "
        f"diffusers {m.get('diffusers')}, transformers {m.get('transformers')}, Python {m.get('python')}, "
        f"commit {m.get('commit') or 'unknown'}; {cfg['dtype']}, {cfg['steps']} steps DDIM, guidance "
        f"{cfg['guidance']:g}, median of {cfg['runs']} runs after {cfg['warmup']} warm-up"
        + (" (--tiny: random tiny models, the numbers mean nothing)" if cfg.get("tiny") else "") + ".",
        f"MFU against {cfg['peak_tflops']:g} TFLOP/s; {result.get('elapsed_seconds', 0):.0f} s of the "
        f"{cfg['budget_s']:g} s budget used.",
    ]
    for name, arch in result.get("architectures", {}).items():
        if "params" in arch:
            params = ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in arch["params"].items())
            flops = arch.get("flops_per_image")
            lines.append(f"- {arch.get('label', name)}: {params}"
                         + (f"; {flops / 1e12:.2f} TFLOP per picture" if flops else ""))
    for name, entries in result["sections"].items():
        if not entries:
            continue
        cols = COLUMNS.get(name, [])
        lines += ["", f"### {TITLES.get(name, name)}", "",
                  "| measurement | " + " | ".join(h for _, h, _ in cols) + " | status |",
                  "|---|" + "---:|" * len(cols) + "---|"]
        for e in entries:
            cells = []
            for key, _, fmt in cols:
                v = e.get(key)
                cells.append(fmt(v) if v is not None and ok(e) else "")
            lines.append(f"| {e['name']} | " + " | ".join(cells) + f" | {_status(e)} |")
    if result.get("targets"):
        lines += ["", "| target | value | goal | met |", "|---|---:|---|---|"]
        for t in result["targets"].values():
            value = "" if t["value"] is None else f"{t['value']:.3f}"
            met = {True: "yes", False: "no", None: "not measured"}[t["met"]]
            lines.append(f"| {t['what']} | {value} | {t['target']} | {met} |")
    if result.get("notes"):
        lines += ["", *(f"- {note}" for note in result["notes"])]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: Path) -> None:
    """The JSON at ``out`` and the markdown beside it (.md), each replaced atomically."""
    annotate(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((out, json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n"),
                       (out.with_suffix(".md"), markdown(result))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, "utf-8")
        os.replace(tmp, path)
