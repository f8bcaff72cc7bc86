"""A 30-image pool end to end, as the walk-through in docs/pools.md does it: plan offline in
Russian, check the plan, run it with the gates on the embedded default model, look at what
came out (imagefolder, sheets, report), write the report again."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

BILDWERK = str(Path(sys.executable).parent / "bildwerk")


def bw(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BILDWERK_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("BILDWERK_LLM", None)
    env.pop("BILDWERK_LLM_BASE_URL", None)
    res = subprocess.run([BILDWERK, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.mark.extended
def test_thirty_images_from_a_topic(tmp_path):
    from bildwerk.pool.plan import PoolPlan
    from bildwerk.train.data import validate_image_folder

    bw("pool", "plan", "Медицина и здоровье", "--images", "30", "--lang", "ru", "--steps", "4",
       "-o", "medicine.yaml", cwd=tmp_path)
    plan = PoolPlan.load(tmp_path / "medicine.yaml")
    assert {k.kind: k.planned for k in plan.kinds} == {"interiors": 18, "exteriors": 6, "items": 6}
    assert all(any("а" <= ch <= "я" for ch in loc.name.lower()) for k in plan.kinds for loc in k.locations)
    shown = bw("pool", "show", "medicine.yaml", cwd=tmp_path).stdout
    assert "interiors" in shown and "18" in shown

    bw("pool", "run", "medicine.yaml", "--out", "pool", cwd=tmp_path)
    out = tmp_path / "pool"
    with open(out / "metadata.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    accepted = {k: v["accepted"] for k, v in report["kinds"].items()}
    assert accepted == {"interiors": 18, "exteriors": 6, "items": 6}  # rejected ones were topped up
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30
    assert {r["kind"] for r in rows} == {"interiors", "exteriors", "items"}
    assert all(r["topic"] == "Медицина и здоровье" and r["model"] == "bildwerk-default" for r in rows)
    assert validate_image_folder(out).ok  # bildwerk train reads it as it is
    for kind in ("interiors", "exteriors", "items"):
        with Image.open(out / "sheets" / f"{kind}.png") as sheet:
            assert sheet.width > 128
    assert report["kinds"]["interiors"]["diversity"]["vendi"] > 1.5
    assert report["gates"]["nsfw"] and report["gates"]["dedupe"]
    assert "interiors" in (out / "report.md").read_text(encoding="utf-8")

    again = bw("pool", "run", "medicine.yaml", "--out", "pool", cwd=tmp_path)
    assert "0 pictures made this run" in again.stdout  # nothing to redo
    (out / "report.md").unlink()
    assert "interiors" in bw("pool", "report", "pool", cwd=tmp_path).stdout
    assert (out / "report.md").is_file()
