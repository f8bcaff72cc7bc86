"""bench/batching.py runs end to end (smoke mode, tiny model), so the script cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _positive(value) -> bool:
    return isinstance(value, int | float) and value > 0


@pytest.mark.extended
def test_batching_bench_smoke(tmp_path):
    from bildwerk.models.tiny import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny-sd", "sd")
    out = tmp_path / "results" / "smoke.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "batching.py"), "--smoke", "--model", str(model),
         "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]

    result = json.loads(out.read_text("utf-8"))
    assert set(result) >= {"machine", "config", "cli", "diffusers", "server", "ratios"}
    assert set(result["machine"]) >= {"cpu", "cores", "threads", "torch", "diffusers", "date_utc"}
    assert result["config"]["smoke"] is True and result["config"]["concurrency"] == [1, 2]

    base = result["diffusers"]
    for key in ("wall_seconds", "images_per_second", "seconds_per_image", "call_seconds_p50"):
        assert _positive(base[key]), key
    assert base["encode_seconds_p50"] is None  # a CLIP model encodes inside the call

    assert [lv["concurrency"] for lv in result["server"]] == [1, 2]
    for lv in result["server"]:
        assert lv["images"] == result["config"]["images"]
        for key in ("wall_seconds", "images_per_second", "seconds_per_image", "latency_p50",
                    "latency_p95", "server_run_p50"):
            assert _positive(lv[key]), (lv["concurrency"], key)
        assert lv["latency_p95"] >= lv["latency_p50"]

    for key in ("help_seconds", "generate_seconds"):
        assert _positive(result["cli"][key]), key
    ratios = result["ratios"]
    assert _positive(ratios["c1_seconds_per_image_over_diffusers"])
    assert all(_positive(v) for v in ratios["throughput_over_diffusers"].values())
    assert set(ratios["targets"]) >= {"c1_seconds_per_image_over_diffusers", "cli_help_seconds"}

    md = out.with_suffix(".md").read_text("utf-8")
    assert "| server, 2 clients |" in md and md in proc.stdout
