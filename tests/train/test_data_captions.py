"""Caption parsing: Tux Paint .txt files, openclipart paths, emoji names."""

from __future__ import annotations

import pytest

from bildwerk.train.data import (
    EmojiSource,
    OpenClipartSource,
    TuxPaintSource,
    clean_name,
    emoji_caption,
    openclipart_caption,
    parse_stamp_caption,
)


def test_tuxpaint_caption_file_all_languages(tux_robin_txt):
    caps = parse_stamp_caption(tux_robin_txt)
    assert caps["en"] == "A robin"  # first line, trailing full stop dropped
    assert caps["de"] == "Ein Rotkehlchen"
    assert caps["fr"] == "Un rouge-gorge"
    assert caps["ko"] == "울새"
    assert caps["ru"] == "Малиновка"
    assert caps["en_GB"] == "A robin redbreast"  # a locale of its own, not English
    assert caps["sr@latin"] == "Crvendać"
    assert "pt_BR" not in caps  # empty translation


def test_tuxpaint_caption_quirks():
    text = "\ufeff  A  lit   candle.  \n\nde.utf8=Eine brennende Kerze.\nstray second line\nko.utf8= 촛불 \n"
    caps = parse_stamp_caption(text)
    assert caps == {"en": "A lit candle", "de": "Eine brennende Kerze", "ko": "촛불"}
    # Multi-sentence captions keep their inner punctuation.
    assert parse_stamp_caption("Cent sign. 100 cents make 1 dollar.\n")["en"] == (
        "Cent sign. 100 cents make 1 dollar"
    )


def test_tuxpaint_adapter_layout(fake_sources):
    records = {r.source_id: r for r in TuxPaintSource().iter_records(fake_sources.tux)}
    assert set(records) == {
        "tuxpaint:animals/birds/robin",
        "tuxpaint:plants/tree",
        "tuxpaint:symbols/alphabets/english/filled/uppercase/F_filled",
        "tuxpaint:symbols/alphabets/english/outlined/uppercase/F_outline",
        "tuxpaint:medical/cross",
        "tuxpaint:town/fence",
    }  # no *_mirror.png, no picture-less gift.txt
    assert records["tuxpaint:plants/tree"].path.suffix == ".png"  # PNG beats SVG
    filled = records["tuxpaint:symbols/alphabets/english/filled/uppercase/F_filled"]
    outline = records["tuxpaint:symbols/alphabets/english/outlined/uppercase/F_outline"]
    assert filled.group_key == outline.group_key
    assert all(r.licence == "GPL-2.0-or-later" for r in records.values())
    # the stamps folder itself is accepted as root too
    assert len(list(TuxPaintSource().iter_records(fake_sources.tux / "usr/share/tuxpaint/stamps"))) == 6


@pytest.mark.parametrize(
    ("path", "caption"),
    [
        ("animals/birds/blue_jay_01.png", "blue jay, bird"),
        ("food/fruit/apple_bitten_dan_gerhard_01.png", "apple bitten, fruit"),  # cut author
        ("animals/birds/acquila_architetto_franc_01.png", "eagle, bird"),  # Italian title
        ("transportation/vehicles/aircraft_jarno_vasamaa2.png", "aircraft, vehicle"),
        ("plants/flowers/flower_01.png", "flower"),  # the folder adds nothing new
        ("signs_and_symbols/flags/europe/germany/germany_bavaria.png", "germany bavaria, flag"),
        ("recreation/games/cards/simple/simple_h_q.png", "queen of hearts, playing card"),
        ("recreation/toys/rubik_s_cube_petri_lumme_01.png", "rubik's cube, toy"),
        ("animals/mammals/big_cats/b_w_tiger_susan_park_01.png", "black and white tiger, big cat"),
        ("shapes/stars/star_05pt02step.png", "5-pointed star"),
        ("computer/icons/lemon-theme/apps/gimp.png", "gimp, icon"),
        ("unsorted/Pinguino3.png", "penguin"),
    ],
)
def test_openclipart_caption(path, caption):
    assert openclipart_caption(path) == caption


def test_openclipart_name_cleaning_details():
    assert clean_name("glace_06_jean-victor_bal_01") == "glace"
    assert clean_name("cello_mo_02") == "cello"
    assert clean_name("azalea_0_symbol_1m_bwh") == "azalea symbol"
    assert clean_name("firewall2_hash_0x89c79d4_01") == "firewall hash"


def test_openclipart_adapter_symlinks_share_a_group(fake_sources):
    records = list(OpenClipartSource().iter_records(fake_sources.openclipart))
    by_id = {r.source_id: r for r in records}
    link = by_id["openclipart:science/apple_bitten_dan_gerhard_01.png"]
    target = by_id["openclipart:food/fruit/apple_bitten_dan_gerhard_01.png"]
    assert link.path == target.path and link.group_key == target.group_key
    assert link.captions["en"] == "apple bitten, science"
    assert all(r.licence == "public-domain" for r in records)


def test_emoji_captions_and_adapter(fake_sources):
    assert emoji_caption("RED APPLE") == "red apple"
    assert emoji_caption("Germany Flag") == "Germany flag"
    assert emoji_caption("CLOCK FACE NINE OCLOCK") == "clock face nine o'clock"
    assert emoji_caption("WOMAN: BEARD", "woman_with_beard") == "woman with beard"
    records = list(EmojiSource().iter_records(fake_sources.emoji))
    assert [r.captions["en"] for r in records] == ["Germany flag", "red apple", "woman with beard"]
    alts = {r.captions["en"]: r.alt_captions for r in records}
    assert alts == {"Germany flag": {}, "red apple": {"en": ("apple",)}, "woman with beard": {}}
    with_tones = list(EmojiSource(include_skin_tones=True).iter_records(fake_sources.emoji))
    tone = [r for r in with_tones if "skin tone" in r.captions["en"]]
    assert [r.captions["en"] for r in tone] == ["woman with beard, light skin tone"]
    assert tone[0].group_key == "emoji:1f9d4-200d-2640-fe0f"
