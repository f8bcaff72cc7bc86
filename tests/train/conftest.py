"""Fixtures for the dataset-builder tests: a small fake copy of the three source packages.

Paths, caption files and emoji.json follow tuxpaint-stamps-default 2022.06.04,
openclipart-png 0.18 and emoji-datasource-twitter 16.0.0, with synthetic pictures.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageDraw


def draw(kind: str, colour: str, size: tuple[int, int] = (80, 60), mode: str = "RGBA") -> Image.Image:
    """A simple shape on a transparent background; distinct kinds look distinct."""
    img = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    w, h = size
    if kind == "disc":
        d.ellipse((2, 2, w - 3, h - 3), fill=colour)
    elif kind == "box":
        d.rectangle((4, 4, w - 5, h - 5), fill=colour, outline="black", width=3)
    elif kind == "triangle":
        d.polygon([(w // 2, 2), (w - 3, h - 3), (2, h - 3)], fill=colour)
    elif kind == "cross":
        d.rectangle((w * 2 // 5, 2, w * 3 // 5, h - 3), fill=colour)
        d.rectangle((2, h * 2 // 5, w - 3, h * 3 // 5), fill=colour)
    elif kind == "ring":
        d.ellipse((2, 2, w - 3, h - 3), outline=colour, width=max(3, w // 10))
    elif kind == "letter":
        d.rectangle((2, 2, w // 4, h - 3), fill=colour)
        d.rectangle((2, 2, w - 3, h // 4), fill=colour)
        d.rectangle((2, h // 2 - 3, w * 3 // 4, h // 2 + 3), fill=colour)
    elif kind == "stripes":
        for x in range(0, w, 8):
            d.rectangle((x, 2, x + 3, h - 3), fill=colour)
    elif kind == "clock":
        d.ellipse((2, 2, w - 3, h - 3), outline="black", width=3, fill="lightgrey")
    else:  # pragma: no cover
        raise ValueError(kind)
    return img if mode == "RGBA" else img.convert(mode)


def save(img: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


TUX_ROBIN_TXT = """A robin.
de.utf8=Ein Rotkehlchen.
en_GB.utf8=A robin redbreast.
fr.utf8=Un rouge-gorge.
ko.utf8=울새
ru.utf8=Малиновка.
sr@latin.utf8=Crvendać.
pt_BR.utf8=
"""


@dataclass
class FakeSources:
    tux: Path
    openclipart: Path
    emoji: Path


@pytest.fixture
def draw_shape():
    """The ``draw(kind, colour, size, mode)`` helper, for tests that make their own pictures."""
    return draw


@pytest.fixture
def tux_robin_txt() -> str:
    return TUX_ROBIN_TXT


@pytest.fixture(scope="session")
def fake_sources(tmp_path_factory) -> FakeSources:
    """Read-only for the tests: built once per session."""
    tmp_path: Path = tmp_path_factory.mktemp("fake-sources")
    # --- Tux Paint: usr/share/tuxpaint/stamps/<category>/<stem>.{png,svg,txt,dat,ogg}
    tux = tmp_path / "tux"
    stamps = tux / "usr/share/tuxpaint/stamps"
    save(draw("disc", "red", (90, 70)), stamps / "animals/birds/robin.png")
    (stamps / "animals/birds/robin.txt").write_text(TUX_ROBIN_TXT, encoding="utf-8")
    (stamps / "animals/birds/robin.dat").write_text("nomirror\n", encoding="utf-8")
    (stamps / "animals/birds/robin_desc_fr.ogg").write_bytes(b"OggS")
    # PNG and SVG of one stamp: the PNG is used, no SVG renderer needed
    save(draw("triangle", "green"), stamps / "plants/tree.png")
    (stamps / "plants/tree.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>", encoding="utf-8")
    (stamps / "plants/tree.txt").write_text(
        "A green tree\nde.utf8=Ein grüner Baum\nfr.utf8=Un arbre vert\nko.utf8=초록 나무\n", encoding="utf-8"
    )
    # A mirror drawing (no caption of its own) and a caption without a picture
    save(draw("triangle", "green").transpose(Image.Transpose.FLIP_LEFT_RIGHT), stamps / "plants/tree_mirror.png")
    (stamps / "seasonal/christmas/gift.txt").parent.mkdir(parents=True)
    (stamps / "seasonal/christmas/gift.txt").write_text("A gift\n", encoding="utf-8")
    # Filled and outlined renderings of one letter: one group, one split
    save(draw("letter", "blue"), stamps / "symbols/alphabets/english/filled/uppercase/F_filled.png")
    (stamps / "symbols/alphabets/english/filled/uppercase/F_filled.txt").write_text(
        "The letter F\nde.utf8=Der Buchstabe F\n", encoding="utf-8"
    )
    outline = draw("letter", "blue")
    ImageDraw.Draw(outline).rectangle((30, 30, 60, 50), fill="yellow")
    save(outline, stamps / "symbols/alphabets/english/outlined/uppercase/F_outline.png")
    (stamps / "symbols/alphabets/english/outlined/uppercase/F_outline.txt").write_text(
        "The letter F (outline)\nde.utf8=Der Buchstabe F (Umriss)\n", encoding="utf-8"
    )
    # A palette image with transparency, and a grey+alpha one
    save(draw("cross", "purple", mode="P"), stamps / "medical/cross.png")
    (stamps / "medical/cross.txt").write_text("A cross.\nru.utf8=Крест\n", encoding="utf-8")
    save(draw("stripes", "black", mode="LA"), stamps / "town/fence.png")
    (stamps / "town/fence.txt").write_text("A fence\n", encoding="utf-8")

    # --- openclipart: usr/share/openclipart/png/<category>/.../<title>_<author>_<NN>.png
    oc = tmp_path / "openclipart"
    png = oc / "usr/share/openclipart/png"
    save(draw("box", "orange"), png / "animals/birds/blue_jay_01.png")
    save(draw("ring", "navy"), png / "food/fruit/apple_bitten_dan_gerhard_01.png")
    # the same picture filed twice: a relative symlink, like the real package
    (png / "science").mkdir(parents=True)
    os.symlink("../food/fruit/apple_bitten_dan_gerhard_01.png", png / "science/apple_bitten_dan_gerhard_01.png")
    # the Tux Paint robin again, at another size: a near duplicate across sources
    save(draw("disc", "red", (180, 140)), png / "animals/birds/robin_redbreast_nicu_buculei_01.png")
    # same shape, other colour: must stay separate
    save(draw("box", "green"), png / "shapes/jigsaw/jigsaw_green_02.png")
    save(draw("clock", "black"), png / "signs_and_symbols/clocks/clock_01.png")
    # a picture that is white on transparency: nothing to learn, left out
    save(draw("disc", "white"), png / "unsorted/white_cloud.png")

    # --- emoji: package/emoji.json + package/img/twitter/64/<image>
    emo = tmp_path / "emoji"
    pkg = emo / "package"
    entries = [
        {"name": "RED APPLE", "short_name": "apple", "short_names": ["apple"], "unified": "1F34E",
         "image": "1f34e.png", "category": "Food & Drink", "has_img_twitter": True},
        {"name": "Germany Flag", "short_name": "flag-de", "short_names": ["de", "flag-de"],
         "unified": "1F1E9-1F1EA", "image": "1f1e9-1f1ea.png", "category": "Flags", "has_img_twitter": True},
        {"name": "WOMAN: BEARD", "short_name": "woman_with_beard", "short_names": ["woman_with_beard"],
         "unified": "1F9D4-200D-2640-FE0F", "image": "1f9d4-200d-2640-fe0f.png",
         "category": "People & Body", "has_img_twitter": True,
         "skin_variations": {"1F3FB": {"unified": "1F9D4-1F3FB-200D-2640-FE0F",
                                       "image": "1f9d4-1f3fb-200d-2640-fe0f.png", "has_img_twitter": True}}},
        {"name": "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "short_name": "skin-tone-2", "short_names": ["skin-tone-2"],
         "unified": "1F3FB", "image": "1f3fb.png", "category": "Component", "has_img_twitter": True},
    ]
    pkg.mkdir(parents=True)
    (pkg / "emoji.json").write_text(json.dumps(entries), encoding="utf-8")
    imgs = pkg / "img/twitter/64"
    save(draw("disc", "crimson", (64, 64)).crop((0, 0, 64, 64)), imgs / "1f34e.png")
    flag = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    fd = ImageDraw.Draw(flag)
    for i, c in enumerate(("black", "red", "gold")):
        fd.rectangle((4, 14 + 12 * i, 59, 25 + 12 * i), fill=c)
    save(flag, imgs / "1f1e9-1f1ea.png")
    save(draw("stripes", "sienna", (64, 64)), imgs / "1f9d4-200d-2640-fe0f.png")
    save(draw("stripes", "peru", (64, 64)), imgs / "1f9d4-1f3fb-200d-2640-fe0f.png")
    save(draw("disc", "peachpuff", (64, 64)), imgs / "1f3fb.png")
    return FakeSources(tux=tux, openclipart=oc, emoji=emo)
