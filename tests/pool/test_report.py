"""The pool report: contact sheets, report.json and report.md from a folder filled by hand."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bildwerk.pool import report as report_module
from bildwerk.pool.folder import PoolFolder
from bildwerk.pool.plan import PoolPlan
from bildwerk.pool.report import (
    MAX_SHEET_THUMBS,
    contact_sheet,
    reason_key,
    render_markdown,
    sample_evenly,
    write_report,
)


def png(rgb, size=(96, 64), text: str | None = None) -> bytes:
    im = Image.new("RGB", size, rgb)
    if text:
        ImageDraw.Draw(im).text((4, 4), text, fill=(255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def plan() -> PoolPlan:
    return PoolPlan.from_data({
        "pool": "medicine", "topic": "Medizin und Gesundheit", "language": "de", "images": 10,
        "kinds": [
            {"kind": "interiors", "share": 60, "images": 6, "locations": [
                {"name": "Wartezimmer", "prompts": [{"prompt": "a waiting room", "seed": 10, "images": 3}]},
                {"name": "Кабинет | врача", "prompts": [{"prompt": "a doctor's office", "seed": 20, "images": 3}]},
                {"name": "Labor", "prompts": [{"prompt": "a laboratory", "seed": 30, "images": 1}]}]},
            {"kind": "exteriors", "share": 20, "images": 2, "locations": [
                {"name": "Klinik", "prompts": [{"prompt": "a clinic from outside", "seed": 40, "images": 2}]}]},
            {"kind": "items", "share": 20, "images": 2, "locations": [
                {"name": "Stethoskop", "prompts": [{"prompt": "a stethoscope", "seed": 50, "images": 2}]}]},
        ]})


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def filled(tmp_path, monkeypatch):
    """interiors: 4 accepted (one-hot embeddings, so Vendi is 4), 1 NSFW and 1 duplicate
    rejected, 1 failed; exteriors: 1 accepted, 1 failed; items: nothing. Two runs: 1800 s
    ended, and one killed 100 s after it started (its last item)."""
    clock = Clock(1_000_000.0)
    monkeypatch.setattr(time, "time", clock)
    p = plan()
    folder = PoolFolder(tmp_path / "pool", p)
    it = {k.kind: [i for i in p.items() if i.kind == k.kind] for k in p.kinds}
    run = folder.begin_run("local")
    inter = it["interiors"]
    colours = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (200, 200, 40)]
    for n, (item, rgb) in enumerate(zip([inter[0], inter[1], inter[3], inter[4]], colours, strict=True)):
        clock.t += 60
        folder.accept(item, png(rgb, text=str(n)), model="m", scores={"nsfw": 0.01},
                      embedding=np.eye(8, dtype=np.float32)[n], seconds=10.0, executor="local")
    clock.t += 60
    folder.reject(inter[2], png((0, 0, 0)), "nsfw 0.990 >= 0.800", scores={"nsfw": 0.99}, seconds=10.0)
    clock.t += 60
    folder.reject(inter[5], png((200, 40, 40)), f"near-duplicate of {inter[0].id} (cosine 0.985)",
                  embedding=np.eye(8, dtype=np.float32)[0], seconds=10.0)
    folder.fail(inter[6], "invalid_request: the model refused")
    clock.t = 1_000_000.0 + 1800
    folder.end_run(run, made=6, outcome="stopped")
    clock.t = 2_000_000.0
    folder.begin_run("ray")
    ext = it["exteriors"]
    clock.t += 100
    folder.accept(ext[0], png((90, 90, 90), size=(64, 96)), embedding=np.ones(8, dtype=np.float32), seconds=20.0)
    folder.fail(ext[1], "RuntimeError: out of memory")
    clock.t = 2_000_500.0  # the report is written later; the killed run never ended
    yield folder
    folder.close()


def test_write_report_numbers_sheets_and_markdown(filled):
    rep = write_report(filled)
    root = filled.root
    on_disk = json.loads((root / "report.json").read_text("utf-8"))
    assert on_disk == json.loads(json.dumps(rep))
    assert not list(root.rglob("*.tmp"))  # atomic writes leave nothing behind

    k = rep["kinds"]
    assert list(k) == ["interiors", "exteriors", "items"]
    i = k["interiors"]
    assert (i["target"], i["planned"], i["accepted"], i["rejected"], i["failed"], i["missing"]) == (6, 7, 4, 2, 1, 2)
    assert i["rejected_by_reason"] == {"nsfw": 1, "near-duplicate": 1}
    assert i["failed_by_reason"] == {"invalid_request": 1}
    assert i["locations"] == {"planned": 3, "covered": 2,
                              "per_location": {"Wartezimmer": 2, "Кабинет | врача": 2}}
    assert i["diversity"]["embedded"] == 4
    assert i["diversity"]["vendi"] == pytest.approx(4.0) and i["diversity"]["mean_cosine"] == pytest.approx(0.0)
    assert i["diversity"]["near_duplicate_pairs"] == 0
    e = k["exteriors"]
    assert (e["accepted"], e["failed"], e["missing"], e["failed_by_reason"]) == (1, 1, 1, {"RuntimeError": 1})
    assert e["diversity"]["vendi"] == 1.0 and e["diversity"]["mean_cosine"] is None
    assert k["items"]["accepted"] == 0 and k["items"]["sheet"] is None and k["items"]["diversity"]["vendi"] is None
    assert rep["totals"] == {"target": 10, "accepted": 5, "rejected": 2, "failed": 2, "missing": 5}
    # The pool as a whole: four one-hot vectors and one all-ones vector.
    assert 4.0 < rep["diversity"]["pool"]["vendi"] < 5.0 and rep["diversity"]["pool"]["embedded"] == 5

    t = rep["time"]
    assert t["runs"] == 2 and t["seconds"] == pytest.approx(1900.0) and t["estimated"] is True
    assert t["accepted_per_hour"] == pytest.approx(5 / (1900 / 3600), rel=1e-3)
    assert t["pictures_per_hour"] == pytest.approx(7 / (1900 / 3600), rel=1e-3)
    assert t["seconds_per_picture"] == pytest.approx(80.0 / 7, rel=1e-3)
    runs = rep["runs"]
    assert [(r["executor"], r["seconds"], r["estimated"], r["outcome"]) for r in runs] == [
        ("local", 1800.0, False, "stopped"), ("ray", 100.0, True, "unfinished")]
    assert runs[1]["ended"] is None and runs[0]["started"].endswith("Z")
    assert rep["reasons"]["rejected:nsfw"] == ["nsfw 0.990 >= 0.800"]

    # Sheets: one per kind with accepted pictures, paths relative to the folder.
    assert rep["sheets"] == {"interiors": "sheets/interiors.png", "exteriors": "sheets/exteriors.png"}
    assert i["sheet"] == "sheets/interiors.png"
    assert not (root / "sheets" / "items.png").exists()
    with Image.open(root / "sheets" / "interiors.png") as sheet:
        assert sheet.width == 4 * (128 + 4) + 4  # 4 thumbnails in one row
        assert 128 + 12 < sheet.height < 128 + 80  # one row, a caption line and the title
        # The 96x64 picture keeps its aspect (128x85), centred in its white cell.
        column = [sheet.getpixel((4 + 64, y)) for y in range(sheet.height)]
        red = [y for y, px in enumerate(column) if px == (200, 40, 40)]
        assert red[-1] - red[0] + 1 == 85
        assert column[red[0] - 1] == (255, 255, 255) and column[red[-1] + 1] == (255, 255, 255)
    with Image.open(root / "sheets" / "exteriors.png") as sheet:
        assert sheet.width == 128 + 8

    md = (root / "report.md").read_text("utf-8")
    assert md == render_markdown(rep)
    for kind in ("interiors", "exteriors", "items"):
        assert f"| {kind} |" in md
    assert "Medizin und Gesundheit" in md and "(sheets/interiors.png)" in md
    assert "nsfw 1, near-duplicate 1" in md and "invalid_request 1" in md
    assert "| 1 | local |" in md and "(did not end)" in md


def test_report_is_rewritten_the_same_and_without_sheets(filled):
    first = write_report(filled)
    second = write_report(filled, sheets=False)
    assert second["sheets"] == {} and all(k["sheet"] is None for k in second["kinds"].values())
    for k in first["kinds"].values():
        k["sheet"] = None
    for rep in (first, second):
        rep.pop("written"), rep.pop("sheets")
    assert first == second


def test_contact_sheet_layout_labels_and_bounds(tmp_path):
    assert contact_sheet([]) is None
    paths = []
    for n in range(11):
        path = tmp_path / f"{n}.png"
        path.write_bytes(png((20 * n, 100, 200 - 10 * n), size=(40 + 8 * n, 40)))
        paths.append(path)
    labels = ["Кухня", "부엌", "a very long location name that cannot fit under one thumbnail"] + ["x"] * 8
    sheet = contact_sheet(paths, labels, columns=4, thumb=64, title="Küche")
    assert sheet is not None and sheet.width == 4 * (64 + 4) + 4
    plain = contact_sheet(paths, None, columns=4, thumb=64)
    assert plain.size == (sheet.width, 3 * (64 + 4) + 4)  # no captions, no title: just the grid
    # A missing file gets a crossed cell; the sheet still comes out.
    broken = contact_sheet([tmp_path / "nope.png", paths[0]], ["gone", "here"], thumb=32)
    assert broken is not None and broken.width == 2 * (32 + 4) + 4
    with pytest.raises(ValueError, match="labels"):
        contact_sheet(paths, ["one"])
    with pytest.raises(ValueError, match="thumb"):
        contact_sheet(paths, thumb=4)


def test_contact_sheet_samples_evenly_beyond_its_bound(tmp_path, monkeypatch):
    data = png((10, 120, 10), size=(16, 16))
    paths = []
    for n in range(300):
        path = tmp_path / f"{n:03d}.png"
        path.write_bytes(data)
        paths.append(path)
    seen: list[str] = []
    real = report_module._thumbnail
    monkeypatch.setattr(report_module, "_thumbnail", lambda p, t: seen.append(p.name) or real(p, t))
    sheet = contact_sheet(paths, [p.stem for p in paths], columns=16, thumb=16, title="many")
    assert len(seen) == MAX_SHEET_THUMBS and seen[0] == "000.png" and seen[-1] == "299.png"
    assert sheet.width == 16 * 20 + 4
    assert sheet.height > (MAX_SHEET_THUMBS // 16) * 20
    assert sample_evenly(5, 8) == [0, 1, 2, 3, 4]
    picked = sample_evenly(1000, 256)
    assert len(picked) == 256 and picked[0] == 0 and picked[-1] == 999
    gaps = np.diff(picked)
    assert gaps.min() >= 3 and gaps.max() <= 4


def test_reason_keys():
    assert reason_key("nsfw 0.93 >= 0.80") == "nsfw"
    assert reason_key("near-duplicate of ab12 (cosine 0.985)") == "near-duplicate"
    assert reason_key("invalid_request: no") == "invalid_request"
    assert reason_key(None) == "unknown"


def test_report_of_an_empty_pool(tmp_path):
    with PoolFolder(tmp_path / "empty", plan()) as folder:
        rep = write_report(folder)
        assert rep["totals"]["accepted"] == 0 and rep["sheets"] == {} and rep["time"]["runs"] == 0
        assert rep["time"]["accepted_per_hour"] is None
        md = (folder.root / "report.md").read_text("utf-8")
        assert "No runs recorded." in md and "| items |" in md
