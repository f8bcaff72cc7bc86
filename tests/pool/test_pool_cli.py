"""`bildwerk pool run` as a user runs it, in a subprocess: SIGKILL mid-run and resume (nothing
lost, nothing made twice), Ctrl-C stops cleanly with the manifest and metadata written."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bildwerk.pool.plan import PoolKind, PoolLocation, PoolPlan, PoolPrompt, PoolSettings

BILDWERK = str(Path(sys.executable).parent / "bildwerk")


def plan_file(tmp_path: Path, images_per_prompt: int = 2) -> tuple[Path, PoolPlan]:
    locs = [PoolLocation(name=n, prompts=[PoolPrompt(prompt=f"a {n}, {a}", seed=1000 * i + 100 * j,
                                                     images=images_per_prompt)
                                          for j, a in enumerate(["daylight", "at dusk"])])
            for i, n in enumerate(["waiting room", "laboratory", "pharmacy"])]
    n = sum(p.images for loc in locs for p in loc.prompts)
    plan = PoolPlan(pool="kill-test", topic="Medicine", images=n,
                    kinds=[PoolKind(kind="interiors", share=100, images=n, locations=locs)],
                    settings=PoolSettings(width=64, height=64, steps=6))
    return plan.save(tmp_path / "plan.yaml"), plan


def run(plan: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "BILDWERK_THREADS": "1", "OMP_NUM_THREADS": "1"}
    # --batch-rows 2: one picture at a time, so a kill lands between pictures at a known pace
    return subprocess.Popen([BILDWERK, "pool", "run", str(plan), "--out", str(out), "--no-gates",
                             "--batch-rows", "2", *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def manifest_ids(out: Path) -> list[str]:
    db = out / "manifest.sqlite"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return [r[0] for r in conn.execute("SELECT id FROM items WHERE status = 'accepted'")]
    except sqlite3.OperationalError:
        return []


def wait_for(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(manifest_ids(out)) < n:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run made too few pictures in time"
        time.sleep(0.1)


@pytest.mark.extended
def test_sigkill_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    path, plan = plan_file(tmp_path)
    out = tmp_path / "pool"
    proc = run(path, out)
    wait_for(out, 4, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    before = {i: (out / "images" / "interiors" / f"{i}.png").stat().st_mtime_ns for i in manifest_ids(out)}
    assert 4 <= len(before) < 12

    again = run(path, out)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    ids = manifest_ids(out)
    assert sorted(ids) == sorted(i.id for i in plan.items())  # every planned picture, once
    after = {i: (out / "images" / "interiors" / f"{i}.png").stat().st_mtime_ns for i in before}
    assert after == before  # what the killed run made was not made again
    with open(out / "metadata.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.extended
def test_ctrl_c_stops_cleanly_and_the_next_run_finishes(tmp_path):
    path, plan = plan_file(tmp_path)
    out = tmp_path / "pool"
    proc = run(path, out)
    wait_for(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "stopping after the pictures in flight" in err
    made = manifest_ids(out)
    assert 2 <= len(made) < 12
    with open(out / "metadata.csv", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == len(made)
    assert (out / "report.md").is_file()

    again = run(path, out)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    assert sorted(manifest_ids(out)) == sorted(i.id for i in plan.items())


def test_a_plan_with_a_typo_fails_in_one_line(tmp_path):
    path, _ = plan_file(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace("steps: 6", "steps: six"), encoding="utf-8")
    res = subprocess.run([BILDWERK, "pool", "run", str(path), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "settings.steps" in res.stderr and len(res.stderr.strip().splitlines()) == 1
