"""Lexicons (translation fallback, enhancement), language detection, keywords, expansion tidying."""

from __future__ import annotations

import pytest

from bildwerk.prompts import lexicon
from bildwerk.prompts.expand import tidy_addition
from bildwerk.prompts.keywords import (
    extract_keywords,
    keyword_prompt,
    stop_words,
    weighted_keywords,
)
from bildwerk.prompts.language import detect_language


@pytest.fixture(autouse=True)
def _fresh_lexicons():
    lexicon.clear_cache()
    yield
    lexicon.clear_cache()


@pytest.mark.parametrize(
    ("lang", "text", "english"),
    [
        ("de", "ein See", "a lake"),
        ("de", "Hochhäuser", "skyscrapers"),
        ("de", "ein Park mit Bäumen", "a park with trees"),
        ("ru", "большое озеро", "big lake"),
        ("ko", "호수", "lake"),
        ("fr", "un lac", "a lake"),
    ],
)
def test_lexicon_translations(lang, text, english):
    t = lexicon.load_lexicon(lang).translate(text)
    assert t.text == english and t.untranslated == []


def test_matching_ignores_case_and_punctuation_and_prefers_longest():
    lex = lexicon.Lexicon("de", {("grüne",): "green", ("wiese",): "meadow", ("grüne", "wiese"): "green meadow lawn"})
    assert lex.translate("Eine GRÜNE Wiese!").text == "eine green meadow lawn"
    assert lex.translate("Eine GRÜNE Wiese!").untranslated == ["eine"]
    assert lex.lookup("wiesen") == "meadow"  # a German plural ending is tried off


def test_user_lexicon_overrides_and_adds(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "lexicon").mkdir(parents=True)
    (home / "lexicon" / "de.tsv").write_text("# mine\nsee\tpond\nmuseumsinsel\tmuseum island\n", "utf-8")
    (home / "lexicon" / "enhance.tsv").write_text("pond\tsmall quiet pond, reeds\n", "utf-8")
    monkeypatch.setenv("BILDWERK_HOME", str(home))
    lex = lexicon.load_lexicon("de")
    assert lex.translate("ein See").text == "a pond"
    assert lex.translate("Museumsinsel").text == "museum island"
    assert lexicon.enhance("a pond") == ("a pond, small quiet pond, reeds", ["pond"])


def test_enhance_each_term_once_and_unknown_left_alone():
    text, terms = lexicon.enhance("A lake, a LAKE and a forest.")
    assert terms == ["lake", "forest"] and text.count("aerial view") >= 1
    assert lexicon.enhance("qwerty zxcv") == ("qwerty zxcv", [])


def test_no_lexicon_for_language():
    assert lexicon.load_lexicon("xx") is None and lexicon.load_lexicon("../etc") is None


@pytest.mark.parametrize(
    ("text", "lang"),
    [("ein See", "de"), ("Hochhäuser", "de"), ("a lake", "en"), ("un lac", "fr"), ("озеро", "ru"),
     ("호수", "ko"), ("ein Park mit Bäumen", "de"), ("Medicine and health", "en"), ("a cat", "en"),
     ("put the cat on a beach", "en")],
)
def test_short_prompts_detected(text, lang):
    assert detect_language(text).language == lang


def test_detection_hint_and_nothing_to_detect(monkeypatch):
    assert detect_language("ein See", hint="de").source == "hint"
    assert detect_language("1234 !!").language is None
    monkeypatch.setenv("BILDWERK_LANGUAGES", "en,fr")
    assert detect_language("ein See").language in ("en", "fr")  # only configured languages


def test_keyword_weights_and_stop_words():
    assert weighted_keywords([("lake", 0.8), ("city", 0.4)]) == [("lake", 1.4), ("city", 1.2)]
    assert keyword_prompt([("lake", 0.8), ("city", 0.4)]) == "(lake:1.40), (city:1.20)"
    assert "ein" in stop_words("de") and stop_words("en") == "english"
    found = extract_keywords(["ein See zwischen Hochhäusern im Sonnenuntergang"], language="de")
    assert found and all(k.split()[0] not in ("ein", "im") for k, _ in found)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


def test_tidy_addition():
    assert tidy_addition("a fox", "A fox, with soft light.") == "soft light"
    assert tidy_addition("a hall", "neon neon neon lights, blue walls, a stra-") == "neon lights, blue walls"
    assert tidy_addition("a cat", "") == ""


@pytest.mark.slow
def test_embedded_llm_expands_deterministically():
    from bildwerk.core.prompt import PromptOptions
    from bildwerk.prompts.pipeline import PromptPipeline

    opts = PromptOptions(expand=True, llm="local", seed=1)
    a = PromptPipeline().run("a red fox in the snow", options=opts)
    b = PromptPipeline().run("a red fox in the snow", options=opts)
    assert a.prompt == b.prompt and a.prompt.startswith("a red fox in the snow, ")
    assert a.step("expand").backend == "local:smollm2-135m"


def test_korean_base_forms_come_from_the_analyser_for_unknown_nouns_too():
    ko = lexicon.load_lexicon("ko")
    assert ko.base_form("고양이가") == "고양이" and ko.base_form("바닷가에서") == "바닷가"
    # Nouns no lexicon entry knows lose their particles (and plural) too.
    assert ("수달",) not in ko.terms and ("너구리",) not in ko.terms
    assert ko.base_form("수달들이") == "수달" and ko.base_form("너구리를") == "너구리"
    # Nouns that end like a particle stay whole.
    for word in ("고양이", "사과", "바닷가", "가을"):
        assert ko.base_form(word) == word


def test_korean_keywords_without_particles():
    found = extract_keywords(["바닷가에서 노는 귀여운 고양이가 해변을 본다"], language="ko", top_n=6)
    words_found = [w for k, _ in found for w in k.split()]
    assert words_found
    assert not {"고양이가", "바닷가에서", "해변을"} & set(words_found)
    assert len({k for k, _ in found}) == len(found)  # merged forms are not repeated
    unknown = extract_keywords(["수달들이 강가에서 하얀 너구리를 본다"], language="ko", top_n=6)
    assert {"수달", "너구리"} <= {k for k, _ in unknown}  # nouns the lexicon does not know
    assert "하얗다" in {k for k, _ in unknown}  # adjectives as stems (dictionary form)
