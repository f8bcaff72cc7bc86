"""Caption -> ImageNet classes: the rule of bildwerk.models.imagenet.labels; evaluation rows."""

from __future__ import annotations

import csv

import pytest

from bildwerk.evaluation.rows import select_rows
from bildwerk.models.imagenet.labels import (
    GROUPS,
    ImagenetMatcher,
    class_label,
    class_synonyms,
    map_caption,
    match_caption,
    singular,
)

DOMESTIC_CATS = frozenset({281, 282, 283, 284, 285})


def test_class_file_has_1000_wordnet_lines():
    syn = class_synonyms()
    assert len(syn) == 1000
    assert syn[0] == ("tench", "Tinca tinca")
    assert syn[281] == ("tabby", "tabby cat")
    assert class_label(999) == "toilet tissue"


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("tabby cat", {281}),
        ("A Golden Retriever.", {207}),
        ("red sports car", {817}),  # head noun: longest known suffix
        ("strawberries", {949}),  # plural
        ("jack-o'-lantern", {607}),  # punctuation inside a class name
        ("black and gold garden spider", {72}),  # "and" inside a class name
        ("blue jay, bird", {17}),  # only the first clause names the object
        ("drawing of a lion", {291}),  # style words dropped
        ("computer mouse", {673}),
        ("crane", {134, 517}),  # WordNet names two classes "crane": both accepted
    ],
)
def test_direct_matches(caption, expected):
    assert map_caption(caption) == frozenset(expected)


def test_group_words():
    assert map_caption("cat") == DOMESTIC_CATS
    assert map_caption("two cats") == DOMESTIC_CATS
    assert map_caption("cat with a hat") == DOMESTIC_CATS
    assert map_caption("dog") == frozenset(range(151, 269))  # the 118 breeds
    assert map_caption("a bear") == frozenset({294, 295, 296, 297})
    assert 1 in map_caption("fish") and 397 in map_caption("fish")  # goldfish .. puffer
    assert map_caption("plane") == frozenset({404, 895})  # airliner, warplane; not the tool


@pytest.mark.parametrize(
    "caption",
    ["happy face", "cat face", "tree", "star", "", "mouse", "kite", "pirate",
     "cat and dog", "slice of pizza"],
)
def test_negatives(caption):
    assert map_caption(caption) is None


def test_match_reports_the_phrase():
    m = match_caption("a cute cartoon cat")
    assert m is not None and m.term == "cat" and m.classes == DOMESTIC_CATS


def test_singular():
    assert [singular(w) for w in ["cats", "boxes", "berries", "bus", "glasses", "wolves", "mice"]] == [
        "cat", "box", "berry", "bus", "glass", "wolf", "mouse"]


def test_group_table_resolves_and_custom_tables():
    # Every group entry names real classes (resolution raises otherwise).
    m = ImagenetMatcher()
    for word in GROUPS:
        assert m.lookup(word.split()), word
    custom = ImagenetMatcher(groups={"feline": ("tabby..Egyptian cat", "lion")}, excluded={})
    assert custom.match("a feline") is not None
    assert custom.match("a feline").classes == DOMESTIC_CATS | {291}
    assert custom.match("mouse").classes == frozenset({673})  # no exclusion table


def test_select_rows(tmp_path):
    rows = [
        {"file_name": "images/a.png", "text": "cat", "split": "test", "text_de": "Katze",
         "text_ko": "고양이"},
        {"file_name": "images/b.png", "text": "happy face", "split": "test"},
        {"file_name": "images/c.png", "text": "banana", "split": "train"},
        {"file_name": "images/d.png", "text": "bananas", "split": "test", "text_de": ""},
    ]
    fields = ["file_name", "text", "split", "source", "licence", "text_de", "text_fr", "text_ko",
              "text_ru"]
    with (tmp_path / "metadata.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    got = select_rows(tmp_path / "metadata.csv")
    assert [r.file_name for r in got] == ["images/a.png", "images/d.png"]
    assert got[0].captions == {"en": "cat", "de": "Katze", "ko": "고양이"}
    assert got[0].image_path == tmp_path / "images" / "a.png"
    assert got[1].captions == {"en": "bananas"} and got[1].classes == frozenset({954})
    assert len(select_rows(tmp_path, split=None)) == 3  # the folder works too
