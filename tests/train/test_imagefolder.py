"""The imagefolder reader: metadata.csv rows, captions by language, pictures through the decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bildwerk.core.errors import InvalidImageError
from bildwerk.train.imagefolder import load_imagefolder


def _folder(tmp_path: Path, rows: str) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "metadata.csv").write_text("file_name,text,text_de,split\n" + rows, encoding="utf-8")
    return root


def test_pictures_are_decoded_upright_on_white(tmp_path):
    root = _folder(tmp_path, "turned.jpg,a red bar,,train\nclear.png,nothing,,train\n")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    bar = Image.new("RGB", (40, 20), "white")
    bar.paste((255, 0, 0), (0, 0, 40, 10))  # the top half red
    bar.save(root / "turned.jpg", exif=exif, quality=95)
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(root / "clear.png")
    data = load_imagefolder(root, resolution=8)
    turned = data.images[0].permute(1, 2, 0).numpy().astype(int)
    # Displayed upright the red half is on the right (EXIF applied, as in decode_image).
    assert turned[4, 7, 1] < 80 and turned[4, 0, 1] > 200
    assert data.images[1].min() == 255  # transparency is white, not black


def test_a_broken_picture_is_an_invalid_image_naming_it(tmp_path):
    root = _folder(tmp_path, "gone.png,a ghost,,train\n")
    with pytest.raises(InvalidImageError, match="gone.png"):
        load_imagefolder(root, resolution=8)


def test_training_and_evaluation_read_the_same_rows(tmp_path):
    from bildwerk.evaluation.rows import count_split, select_rows

    root = _folder(
        tmp_path,
        " cat.png , a cat , eine Katze ,\n"  # no split: a training row, cells stripped
        "dog.png,a dog,,test\n"
        "car.png,a car,ein Auto,train\n"
        "blank.png,,nur deutsch,train\n",  # no English caption
    )
    for name in ("cat.png", "dog.png", "car.png", "blank.png"):
        Image.new("RGB", (8, 8), "white").save(root / name)
    train = load_imagefolder(root, resolution=8, split="train")
    assert train.file_names == ["cat.png", "car.png", "blank.png"]
    assert train.captions[0] == {"en": "a cat", "de": "eine Katze"}
    assert train.captions[2] == {"en": "", "de": "nur deutsch"}  # "en" kept for training
    # Evaluation reads the same rows: a row without a split is a training row there too.
    picked = select_rows(root, split="train")
    assert [r.file_name for r in picked] == ["cat.png", "car.png"]  # both name ImageNet classes
    assert picked[0].captions == {"en": "a cat", "de": "eine Katze"}
    assert picked[0].image_path == root / "cat.png"
    assert count_split(root, "train") == 3 and count_split(root / "metadata.csv", "test") == 1
    assert count_split(root, None) == 4
    assert [r.file_name for r in select_rows(root / "metadata.csv", split="test")] == ["dog.png"]


def test_caption_languages_are_detected_in_the_text_column_and_read_from_the_others(monkeypatch):
    from bildwerk.train import imagefolder

    german = ["Ein roter Kreis auf weißem Grund", "Holzschnitt eines Pferdes", "Porträt einer Frau mit Haube",
              "Ein Hund schläft unter dem Tisch"]
    rows = [{"en": c} for c in german] + [{"en": "a red apple on a table", "ko": "빨간 사과"}]
    counts, estimated = imagefolder.caption_language_counts(rows)
    assert counts == {"de": 4, "en": 1, "ko": 1} and not estimated  # the "en" column held German
    assert imagefolder.main_languages(counts) == ["de", "en", "ko"]
    assert imagefolder.main_languages({"de": 97, "it": 3}) == ["de"]  # a stray misdetection is no language
    # A large folder: a spread sample of the text column is detected, its counts scaled.
    monkeypatch.setattr(imagefolder, "DETECT_AT_MOST", 2)
    counts, estimated = imagefolder.caption_language_counts([{"en": c} for c in german])
    assert estimated and counts == {"de": 4}
