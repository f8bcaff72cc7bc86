"""validate_image_folder lists every problem of an imagefolder in one report."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bildwerk.train.data import DatasetError, validate_image_folder


def _folder(tmp_path: Path, csv_text: str) -> Path:
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(root / "images/ok.png")
    Image.new("RGB", (8, 8), "blue").save(root / "images/blue.png")
    (root / "images/broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    full = root / "images/cut.png"
    Image.new("RGB", (64, 64), "green").save(full)
    full.write_bytes(full.read_bytes()[:60])  # truncated: opens, fails to decode
    (root / "metadata.csv").write_text(csv_text, encoding="utf-8")
    return root


def test_all_problems_in_one_report(tmp_path):
    root = _folder(
        tmp_path,
        "file_name,text,split\n"
        "images/ok.png,a red square,train\n"
        "images/missing.png,a ghost,train\n"
        "images/blue.png,   ,train\n"
        "images/broken.png,garbage,test\n"
        "images/cut.png,a truncated file,train\n"
        "images/ok.png,listed twice,holdout\n"
        "../outside.png,escape,train\n",
    )
    report = validate_image_folder(root)
    assert not report.ok and report.rows == 7
    found = {(p.row, p.message.split(" (")[0]) for p in report.problems}
    assert (2, "file does not exist") in found
    assert (3, "empty caption") in found
    assert (4, "not a readable image") in found
    assert (5, "not a readable image") in found
    assert (6, "file_name already listed in row 1") in found
    assert (6, "unknown split 'holdout'") in found
    assert (7, "file_name must be a relative path inside the folder") in found
    assert report.problems[0].line == 3  # header is line 1
    text = str(report)
    assert "row 2 (line 3) [images/missing.png]: file does not exist" in text
    with pytest.raises(DatasetError, match="problem"):
        report.raise_if_failed()


def test_folder_level_problems(tmp_path):
    assert "does not exist" in str(validate_image_folder(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    assert [p.message for p in validate_image_folder(tmp_path / "empty").problems] == [
        "metadata.csv is missing"
    ]
    root = _folder(tmp_path, "image,caption\nimages/ok.png,red\n")
    messages = [p.message for p in validate_image_folder(root).problems]
    assert messages == ["required column 'file_name' is missing", "required column 'text' is missing"]


def test_valid_folder_passes(tmp_path):
    root = _folder(tmp_path, "file_name,text,text_de\nimages/ok.png,a red square,ein rotes Quadrat\n")
    report = validate_image_folder(root)
    assert report.ok and report.images_checked == 1
    report.raise_if_failed()
