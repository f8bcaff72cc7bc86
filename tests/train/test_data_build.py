"""build_dataset end to end on the fake package trees: no network, no apt, no npm."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bildwerk.train.data import (
    METADATA_COLUMNS,
    DatasetError,
    EmojiSource,
    OpenClipartSource,
    TuxPaintSource,
    build_dataset,
    split_unit,
    validate_image_folder,
)


def _sources(fake):
    return [TuxPaintSource(fake.tux), OpenClipartSource(fake.openclipart), EmojiSource(fake.emoji)]


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "metadata.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def built(fake_sources, tmp_path_factory):
    """One build shared by the read-only checks of this module."""
    tmp_path = tmp_path_factory.mktemp("built")
    calls: list[tuple[str, int, int | None]] = []
    out = tmp_path / "ds"
    summary = build_dataset(
        out,
        sources=_sources(fake_sources),
        size=64,
        cache_dir=tmp_path / "cache",
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    return out, summary, calls


def test_build_writes_an_imagefolder(built):
    out, summary, calls = built
    rows = _rows(out)
    with (out / "metadata.csv").open(encoding="utf-8") as f:
        assert f.readline().strip() == ",".join(METADATA_COLUMNS)
    assert list(METADATA_COLUMNS[:5]) == ["file_name", "text", "split", "source", "licence"]
    assert {"text_de", "text_fr", "text_ko", "text_ru"} <= set(METADATA_COLUMNS)
    # 6 stamps + 6 openclipart files (one white-only picture left out) + 3 emoji,
    # minus the robin that openclipart repeats and the symlinked apple.
    assert summary.images == len(rows) == 13
    assert summary.per_source["tuxpaint"].images == 6
    assert summary.per_source["openclipart"].failed == 1
    assert summary.exact_duplicates == 0 and summary.near_duplicates == 1
    for row in rows:
        assert row["text"].strip()
        assert row["split"] in {"train", "test"}
        with Image.open(out / row["file_name"]) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
    assert sum(summary.splits.values()) == summary.images and summary.splits.get("test", 0) >= 1
    assert validate_image_folder(out).ok
    for name in ("dataset_card.md", "build_info.json", "captions.jsonl"):
        assert (out / name).is_file()
    assert {stage for stage, _, _ in calls} >= {"normalise", "dedupe", "write", "fetch tuxpaint"}


def test_duplicates_merge_captions_across_sources(built):
    out, _, _ = built
    rows = {r["source_ids"]: r for r in _rows(out)}
    robin = rows["tuxpaint:animals/birds/robin;openclipart:animals/birds/robin_redbreast_nicu_buculei_01.png"]
    assert robin["text"] == "A robin" and robin["source"] == "tuxpaint"
    assert (robin["text_de"], robin["text_ko"], robin["text_ru"]) == ("Ein Rotkehlchen", "울새", "Малиновка")
    assert robin["licence"] == "GPL-2.0-or-later AND public-domain"
    apple = next(r for r in rows.values() if "apple_bitten" in r["source_ids"])
    assert apple["source_ids"].count("openclipart:") == 2  # the symlink joined its target
    assert apple["text_de"] == ""  # English-only source: empty, not missing
    extra = {
        json.loads(line)["file_name"]: json.loads(line) for line in (out / "captions.jsonl").open(encoding="utf-8")
    }
    assert extra[robin["file_name"]]["captions"]["en"] == ["A robin", "robin redbreast, bird"]
    assert extra[robin["file_name"]]["captions"]["sr@latin"] == ["Crvendać"]
    # distinct pictures (same shape, other colour) stayed apart
    assert any("jigsaw_green" in k for k in rows) and any("blue_jay" in k for k in rows)


def test_images_are_white_squares(built):
    out, _, _ = built
    for path in sorted((out / "images").glob("*.png")):
        arr = np.asarray(Image.open(path))
        assert arr.shape == (64, 64, 3)
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
        assert border.min() >= 240, path.name  # margin on white all round


def test_split_is_stable_and_keeps_groups_together(fake_sources, tmp_path, built):
    out, _, _ = built
    again = tmp_path / "again"
    build_dataset(again, sources=_sources(fake_sources), size=64, cache_dir=tmp_path / "cache")
    assert (out / "metadata.csv").read_bytes() == (again / "metadata.csv").read_bytes()
    split_of_group: dict[str, set[str]] = defaultdict(set)
    for line in (out / "captions.jsonl").open(encoding="utf-8"):
        item = json.loads(line)
        for key in item["group_keys"]:
            split_of_group[key].add(item["split"])
    assert all(len(splits) == 1 for splits in split_of_group.values())
    # The filled and outlined F are one group even though they are different pictures.
    f_rows = [r for r in _rows(out) if "alphabets" in r["source_ids"]]
    assert len(f_rows) == 2 and f_rows[0]["split"] == f_rows[1]["split"]


def test_split_unit_is_uniform_and_seeded():
    keys = [f"group-{i}" for i in range(20000)]
    held = [k for k in keys if split_unit(0, k) < 0.05]
    assert 0.04 < len(held) / len(keys) < 0.06
    assert held == [k for k in keys if split_unit(0, k) < 0.05]  # deterministic
    assert held != [k for k in keys if split_unit(1, k) < 0.05]  # the seed matters


def test_rebuild_in_place_and_refuse_foreign_folder(fake_sources, tmp_path):
    out = tmp_path / "ds"
    first = build_dataset(out, sources=_sources(fake_sources), size=32, cache_dir=tmp_path / "cache")
    (out / "images" / "stale.png").write_bytes(b"old")
    again = build_dataset(out, sources=_sources(fake_sources), size=32, cache_dir=tmp_path / "cache", seed=3)
    assert again.images == first.images and not (out / "images" / "stale.png").exists()
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not empty"):
        build_dataset(foreign, sources=_sources(fake_sources), cache_dir=tmp_path / "cache")
    assert (foreign / "holiday.jpg").exists()


def test_limit_and_bad_arguments(fake_sources, tmp_path):
    summary = build_dataset(
        tmp_path / "small", sources=_sources(fake_sources), size=32, limit_per_source=2,
        cache_dir=tmp_path / "cache", test_fraction=0.0,
    )
    assert {n: c.records for n, c in summary.per_source.items()} == {"tuxpaint": 2, "openclipart": 2, "emoji": 2}
    assert summary.splits == {"train": summary.images}
    with pytest.raises(DatasetError, match="unknown source"):
        build_dataset(tmp_path / "x", sources=["flickr"], cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetError, match="test_fraction"):
        build_dataset(tmp_path / "x", sources=_sources(fake_sources), test_fraction=1.5)


def test_card_and_build_info(built):
    out, summary, _ = built
    card = (out / "dataset_card.md").read_text(encoding="utf-8")
    for needle in ("GPL-2.0-or-later", "Public domain", "CC-BY 4.0", "tuxpaint-stamps-default",
                   "openclipart-png", "emoji-datasource-twitter", "64 x 64", "German"):
        assert needle in card
    info = json.loads((out / "build_info.json").read_text(encoding="utf-8"))
    assert info["parameters"]["seed"] == 0 and info["summary"]["images"] == summary.images


@pytest.mark.slow
def test_real_sources_download(tmp_path):
    """Downloads the real packages through apt-get and npm (about 350 MB)."""
    summary = build_dataset(tmp_path / "real", size=64, limit_per_source=30, cache_dir=tmp_path / "cache")
    assert summary.per_source["tuxpaint"].images > 20
    assert summary.per_language["ko"] > 20
    assert validate_image_folder(tmp_path / "real").ok


def test_wrong_local_root_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="source tuxpaint: no Tux Paint stamps"):
        build_dataset(tmp_path / "out", sources=[TuxPaintSource(tmp_path)], cache_dir=tmp_path / "cache")
