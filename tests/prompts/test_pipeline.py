"""The prompt pipeline end to end: each step recorded, backends real or loopback."""

from __future__ import annotations

import pytest
from fakes.openai_server import FakeOpenAIServer

from bildwerk.core.errors import InvalidRequestError, PromptAnswerRejected, PromptBackendError
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.weights import parse_weighted
from bildwerk.prompts.llm import OpenAIChat
from bildwerk.prompts.pipeline import PromptPipeline, run_prompt_pipeline


class ScriptedLLM:
    """A chat backend answering from a function; records what it was asked."""

    name = "fake:scripted"

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[tuple[str, str, int | None]] = []

    def complete(self, system, user, *, seed=None, max_tokens=128, temperature=0.7):
        self.calls.append((system, user, seed))
        return self.answer(system, user, seed)


def test_plain_english_prompt_runs_detection_only():
    rec = PromptPipeline().run("a red apple on a table")
    assert rec.prompt == "a red apple on a table" and rec.language == "en"
    assert [s.step for s in rec.steps] == ["language"]
    assert rec.steps[0].seconds >= 0 and rec.steps[0].backend == "lingua+lexicon"


def test_museum_german_to_english_by_lexicon_with_enhancement():
    rec = PromptPipeline().run("ein See", options=PromptOptions(enhance=True))
    assert rec.language == "de"
    translate = rec.step("translate")
    assert translate.input == "ein See" and translate.output == "a lake"
    assert translate.backend == "lexicon:de" and translate.details["untranslated"] == []
    lexicon = rec.step("lexicon")
    assert lexicon.input == "a lake" and lexicon.output.startswith("a lake, ") and "lake" in lexicon.details["terms"]
    assert rec.prompt == lexicon.output and rec.original == "ein See"


def test_hochhaeuser_and_unknown_words_are_reported():
    rec = PromptPipeline().run("Hochhäuser am Quxlbach", options=PromptOptions(language="de"))
    t = rec.step("translate")
    assert "skyscrapers" in t.output and "quxlbach" in t.details["untranslated"]
    assert any("quxlbach" in w for w in rec.warnings)  # a partial translation is never silent


def test_multilingual_model_skips_translation_and_keeps_original():
    rec = PromptPipeline().run("ein roter Apfel", model_languages=None)
    assert rec.prompt == "ein roter Apfel"
    assert rec.step("translate").details["skipped"]


def test_a_model_trained_on_german_keeps_german_prompts_and_translates_others():
    de_en = ("de", "en")
    rec = PromptPipeline().run("ein roter Apfel", model_languages=de_en)
    assert rec.prompt == "ein roter Apfel" and rec.step("translate").details["model_languages"] == ["de", "en"]
    rec = PromptPipeline().run("une pomme rouge", model_languages=de_en, options=PromptOptions(language="fr"))
    assert rec.step("translate").backend == "lexicon:fr" and rec.prompt != "une pomme rouge"
    off = PromptOptions(translate="off", language="fr")
    assert "only de, en" in PromptPipeline().run("une pomme", model_languages=de_en, options=off).warnings[0]
    assert not PromptPipeline().run("ein Apfel", model_languages=de_en, options=PromptOptions(translate="off")).warnings


def test_translation_off_warns_for_english_only_models():
    rec = PromptPipeline().run("ein roter Apfel", options=PromptOptions(translate="off"))
    assert rec.prompt == "ein roter Apfel" and rec.warnings


def test_llm_translation_through_openai_sdk_against_loopback():
    with FakeOpenAIServer(responder=lambda body: "Translation: a lake between skyscrapers") as server:
        llm = OpenAIChat(base_url=server.base_url, api_key="k", model="gpt-test")
        rec = PromptPipeline(llm=llm).run("ein See zwischen Hochhäusern", options=PromptOptions(seed=7))
        sent = server.requests[0].json
    assert rec.prompt == "a lake between skyscrapers"
    assert rec.step("translate").backend == "openai:gpt-test"
    assert "German" in sent["messages"][-1]["content"] and sent["seed"] == 7 and sent["model"] == "gpt-test"


def test_failing_llm_falls_back_to_lexicon_with_warning_or_raises():
    with FakeOpenAIServer(responder=lambda body: "x") as server:
        server.fail_next(10, 500)
        llm = OpenAIChat(base_url=server.base_url, api_key="k", max_retries=0)
        rec = PromptPipeline(llm=llm).run("ein See", options=PromptOptions(translate="llm"))
        assert rec.prompt == "a lake" and "fallback" in rec.step("translate").details
        assert any("lexicon" in w for w in rec.warnings)
        with pytest.raises(PromptBackendError, match="500"):
            PromptPipeline(llm=llm).run("ein See", options=PromptOptions(translate="llm", fallback=False))


def test_weights_survive_lexicon_translation():
    rec = PromptPipeline().run("ein (See:1.3) und Bäume", options=PromptOptions(language="de"))
    segs = parse_weighted(rec.prompt)
    assert any(s.text == "lake" and s.weight == 1.3 for s in segs)


def test_wildcards_seeded_and_template_recorded():
    opts = PromptOptions(seed=3)
    a = PromptPipeline().run("a {red|green|blue} __animal__", options=opts)
    b = PromptPipeline().run("a {red|green|blue} __animal__", options=opts)
    assert a.prompt == b.prompt and "{" not in a.prompt and "__" not in a.prompt
    assert a.template == "a {red|green|blue} __animal__" and a.step("wildcards").output == a.prompt
    others = {PromptPipeline().run("a {red|green|blue} __animal__", options=PromptOptions(seed=s)).prompt
              for s in range(8)}
    assert len(others) > 1
    with pytest.raises(InvalidRequestError, match="__nosuchthing__"):
        PromptPipeline().run("a __nosuchthing__")


def test_style_wraps_prompt_and_adds_negative():
    rec = PromptPipeline().run("a cat", "blurry", options=PromptOptions(style="watercolor"))
    style = rec.step("style")
    assert "a cat" in rec.prompt and rec.prompt != "a cat" and style.backend == "watercolor"
    assert rec.negative_prompt.startswith("blurry") and len(rec.negative_prompt) > len("blurry")
    with pytest.raises(InvalidRequestError, match="unknown style"):
        PromptPipeline().run("a cat", options=PromptOptions(style="no-such-style"))


def test_user_style_file_overrides(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "styles").mkdir(parents=True)
    (home / "styles" / "mine.json").write_text(
        '[{"name": "museum", "prompt": "aerial photo of {prompt}, top-down", "negative_prompt": "text"}]')
    monkeypatch.setenv("BILDWERK_HOME", str(home))
    rec = PromptPipeline().run("a lake", options=PromptOptions(style="museum"))
    assert rec.prompt == "aerial photo of a lake, top-down" and rec.negative_prompt == "text"


def test_expansion_appends_and_is_seeded():
    llm = ScriptedLLM(lambda s, u, seed: f"Details: golden light, mist {seed}")
    rec = PromptPipeline(llm=llm).run("a red fox in the snow", options=PromptOptions(expand=True, seed=5))
    assert rec.prompt == "a red fox in the snow, golden light, mist 5"  # the subject stays first
    assert rec.step("expand").details["added"] == "golden light, mist 5" and llm.calls[0][2] == 5


def test_failing_expansion_is_left_out_with_warning():
    def boom(*_):
        raise PromptBackendError("endpoint down")

    rec = PromptPipeline(llm=ScriptedLLM(boom)).run("a fox", options=PromptOptions(expand=True))
    assert rec.prompt == "a fox" and rec.step("expand").details["failed"] and rec.warnings
    with pytest.raises(PromptBackendError):
        PromptPipeline(llm=ScriptedLLM(boom)).run("a fox", options=PromptOptions(expand=True, fallback=False))


def test_korean_team_flow_paraphrase_then_weighted_keywords():
    variants = iter(["바닷가에서 뛰노는 귀여운 고양이", "해변에서 노는 작은 고양이", "모래사장 위의 고양이"])
    llm = ScriptedLLM(lambda s, u, seed: next(variants))
    rec = PromptPipeline(llm=llm).run("바닷가에서 노는 귀여운 고양이",
                                      options=PromptOptions(paraphrase=3, keywords=True, keyword_mode="replace",
                                                            translate="off"))
    assert rec.language == "ko" and len(rec.variants) == 3
    kw = rec.step("keywords")
    assert kw.backend == "keybert:use+kiwi" and kw.details["keywords"]
    # Kiwi's words: no particles ("고양이가"), stems in dictionary form.
    assert all(not k.endswith(("에서", "가", "를")) for k, _ in kw.details["keywords"])
    segs = parse_weighted(rec.prompt)
    assert max(s.weight for s in segs) == pytest.approx(1.4)  # the best keyword carries the top weight
    assert any("고양이" in s.text for s in segs)


def test_run_prompt_pipeline_knows_the_default_model_is_multilingual():
    rec = run_prompt_pipeline("ein roter Apfel")  # default model: the sentence encoder
    assert rec.prompt == "ein roter Apfel" and rec.step("translate").details["skipped"]


def test_run_prompt_pipeline_keeps_german_for_a_clip_model_trained_on_it(tmp_path):
    import json

    clip = tmp_path / "museum-clip"
    clip.mkdir()
    (clip / "model_index.json").write_text("{}")
    (clip / "bildwerk.json").write_text(json.dumps({"languages": ["de", "en"]}))  # as `bildwerk train` writes it
    rec = run_prompt_pipeline("ein roter Apfel", model=str(clip))
    assert rec.prompt == "ein roter Apfel" and rec.step("translate").details["skipped"]
    (clip / "bildwerk.json").unlink()  # without the record: an English-only CLIP model, as before
    assert run_prompt_pipeline("ein roter Apfel", model=str(clip)).step("translate").backend == "lexicon:de"


def test_record_is_json_on_the_request():
    from bildwerk.core.request import build_request

    rec = PromptPipeline().run("ein See", options=PromptOptions(enhance=True))
    req = build_request(prompt=rec.prompt, negative_prompt=rec.negative_prompt, prompt_record=rec)
    data = req.record()
    assert data["prompt_record"]["original"] == "ein See"
    assert [s["step"] for s in data["prompt_record"]["steps"]] == ["language", "translate", "lexicon"]


def test_design_team_flow_describe_then_merge_with_fallback():
    from PIL import Image

    from bildwerk.prompts.describe import Description

    class Remote:
        name = "openai:vision"

        def __init__(self, fail: bool):
            self.fail = fail

        def describe(self, image):
            if self.fail:
                raise PromptBackendError("vision endpoint down")
            return Description("a photo of a cat", "openai:vision", None, [])

    img = Image.new("RGB", (64, 64), "white")
    opts = PromptOptions(describe="openai")
    rec = PromptPipeline(describer=Remote(False)).run("make it a watercolor", options=opts, image=img)
    assert rec.step("describe").output == "a photo of a cat" and rec.step("describe").backend == "openai:vision"
    assert rec.step("merge").backend == "rules" and "cat" in rec.prompt and "watercolor" in rec.prompt
    with pytest.raises(PromptBackendError):
        PromptPipeline(describer=Remote(True)).run("make it a watercolor", image=img,
                                                    options=PromptOptions(describe="openai", fallback=False))
    rec = PromptPipeline(describer=Remote(True)).run("make it a watercolor", options=opts, image=img)
    assert rec.step("describe").backend.startswith("local") and any("offline" in w for w in rec.warnings)


def test_request_validated_before_any_backend_runs():
    from bildwerk.app.generate import Generator
    from bildwerk.core.spec import JobSpec

    llm = ScriptedLLM(lambda *a: "never")
    with pytest.raises(InvalidRequestError, match="multiple of 8"):
        JobSpec.build(prompt="ein See", width=100, options=PromptOptions(expand=True))
    assert llm.calls == []
    spec = Generator(pipeline=PromptPipeline(llm=llm)).with_prompt(JobSpec.build(prompt="a {red|blue} car"))
    rec = spec.request.prompt_record
    assert spec.request.seed is not None and rec.step("wildcards").details["seed"] == spec.request.seed
    assert spec.request.prompt in ("a red car", "a blue car")


def test_language_without_lexicon_is_left_untranslated_with_warning():
    rec = PromptPipeline().run("il gatto nero sul divano", options=PromptOptions(language="it"))
    assert rec.prompt == "il gatto nero sul divano" and rec.step("translate").details["failed"]
    assert any("no lexicon" in w for w in rec.warnings)
    with pytest.raises(PromptBackendError, match="no lexicon"):
        PromptPipeline().run("il gatto nero", options=PromptOptions(language="it", fallback=False))


# -- issue 17: the Korean team's order, unusable model answers, edits in the user's language --

def _ko_team_llm():
    """Rewords in Korean; "translates" by a fixed table (a stand-in for a real LLM)."""
    english = {"바닷가에서 노는 고양이": "a cat playing at the seaside",
               "해변에서 노는 작은 고양이": "a small cat playing on the beach"}

    def answer(system, user, seed):
        if "Rewrite" in system:
            return "해변에서 노는 작은 고양이"
        return english[user.split(": ", 1)[1]]

    return ScriptedLLM(answer)


def test_paraphrase_first_rewords_in_the_source_language_then_translates_each():
    llm = _ko_team_llm()
    opts = PromptOptions(order="paraphrase-first", paraphrase=1, translate="llm")
    rec = PromptPipeline(llm=llm).run("바닷가에서 노는 고양이", options=opts)
    assert [s.step for s in rec.steps] == ["language", "paraphrase", "translate", "translate"]
    assert rec.step("paraphrase").details["variants"] == ["해변에서 노는 작은 고양이"]  # made in Korean
    assert rec.prompt == "a cat playing at the seaside"
    assert rec.variants == ["a small cat playing on the beach"] and rec.steps[-1].details["variant"] == 0
    default = PromptPipeline(llm=_ko_team_llm()).run("바닷가에서 노는 고양이",
                                                     options=PromptOptions(paraphrase=1, translate="llm"))
    assert [s.step for s in default.steps] == ["language", "translate", "paraphrase"]
    with pytest.raises(ValueError, match="paraphrase-first"):
        PromptOptions(order="keywords-first")


def test_nonsense_paraphrase_is_left_out_with_a_warning_or_fails_strict():
    llm = ScriptedLLM(lambda s, u, seed: "The legendary king of the sea.")
    rec = PromptPipeline(llm=llm).run("a cat by the sea", options=PromptOptions(paraphrase=1))
    step = rec.step("paraphrase")
    assert rec.variants == [] and step.details["rejected"] == "The legendary king of the sea."
    assert "subject" in step.details["reason"] and step.details["similarity"] < 0.45
    assert any("subject" in w for w in rec.warnings)
    with pytest.raises(PromptAnswerRejected, match="subject") as err:
        PromptPipeline(llm=llm).run("a cat by the sea", options=PromptOptions(paraphrase=1, fallback=False))
    assert err.value.code == "prompt_answer_rejected"
    good = ScriptedLLM(lambda s, u, seed: "a kitten at the seaside")
    assert PromptPipeline(llm=good).run("a cat by the sea", options=PromptOptions(paraphrase=1)).variants


def test_translation_that_echoes_the_input_falls_back_to_the_lexicon_or_fails_strict():
    for echo in ("ein See", "Ein See!", "ein schöner See"):  # the input, or still German
        llm = ScriptedLLM(lambda s, u, seed, echo=echo: echo)
        rec = PromptPipeline(llm=llm).run("ein See", options=PromptOptions(translate="llm"))
        t = rec.step("translate")
        assert rec.prompt == "a lake" and t.backend == "lexicon:de" and t.details["rejected"] == echo
        assert any("not used" in w for w in rec.warnings)
        with pytest.raises(PromptAnswerRejected, match="translat"):
            PromptPipeline(llm=llm).run("ein See", options=PromptOptions(translate="llm", fallback=False))


def test_expansion_that_drowns_the_subject_is_left_out():
    llm = ScriptedLLM(lambda s, u, seed: "The legendary king of the sea rules over an endless kingdom of "
                                         "mermaids, golden palaces and sunken treasure ships")
    rec = PromptPipeline(llm=llm).run("ein See", options=PromptOptions(expand=True), model_languages=None)
    assert rec.prompt == "ein See" and rec.step("expand").details["reason"]


@pytest.mark.parametrize(("edit", "merged"), [
    ("mets le chat sur une plage", "a photo of a cat, on a beach"),
    ("en aquarelle", "a cat, as a watercolor"),
    ("als Aquarell", "a cat, as a watercolor"),
    ("setze die Katze an einen Strand und füge einen Hut hinzu", "a photo of a cat, at a beach, with a hat"),
])
def test_design_team_edits_in_their_language_merge_into_one_language(edit, merged):
    from PIL import Image

    img = Image.new("RGB", (64, 64), "white")
    opts = PromptOptions(description="a photo of a cat")
    rec = PromptPipeline().run(edit, options=opts, image=img, model_languages=None)
    merge = rec.step("merge")
    assert rec.prompt == merged and merge.details["edit"]["phrases"]
    assert rec.step("translate").details["skipped"]  # translated once, by the merge


def test_a_users_own_description_is_translated_only_for_a_model_that_does_not_read_it():
    from PIL import Image

    img = Image.new("RGB", (64, 64), "white")
    opts = PromptOptions(description="un chat rouge sur un fond bleu")
    # A model that reads French (the default model) gets the user's words, the edit's phrase in English.
    kept = PromptPipeline().run("en aquarelle", options=opts, image=img, model_languages=None)
    assert kept.prompt == "un chat rouge sur un fond bleu, as a watercolor"
    assert kept.step("merge").details["language"] == "fr"
    # An English-only model gets the description in (lexicon) English too: one language it reads.
    english = PromptPipeline().run("en aquarelle", options=opts, image=img, model_languages=("en",))
    assert "cat" in english.prompt and "chat" not in english.prompt
    assert english.prompt.endswith("as a watercolor")
    assert english.step("merge").details["description"]["english"] in english.prompt


def test_enhancement_matches_german_prompts_left_untranslated_for_the_default_model():
    rec = run_prompt_pipeline("ein See zwischen Hochhäusern", options=PromptOptions(enhance=True))
    lexicon = rec.step("lexicon")
    assert rec.step("translate").details["skipped"] and lexicon.backend == "lexicon:de"
    assert "lake" in lexicon.details["terms"] and rec.prompt.startswith("ein See zwischen Hochhäusern, ")
    assert not rec.warnings
    nothing = run_prompt_pipeline("ein Quxlbach", options=PromptOptions(enhance=True))
    assert nothing.step("lexicon").details["terms"] == []
    assert any("enhancement" in w for w in nothing.warnings)
