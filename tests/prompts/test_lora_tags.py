"""A1111 LoRA tags: taken out of the prompt before the steps, merged with the loras field."""

from __future__ import annotations

import pytest

from bildwerk.core.loras import LoraSpec, LoraTagError, extract_lora_tags, merge_loras
from bildwerk.core.prompt import PromptOptions
from bildwerk.prompts.pipeline import PromptPipeline


def test_tags_are_taken_out_with_their_weights():
    text, tags = extract_lora_tags("a cat, <lora:Film Grain:0.8> in snow <lyco:ink> <lora:x:0.5:0.2>, ")
    assert text == "a cat, in snow"
    assert [(t.name, t.weight) for t in tags] == [("Film Grain", 0.8), ("ink", 1.0), ("x", 0.5)]
    assert extract_lora_tags("no tags (here:1.2)") == ("no tags (here:1.2)", [])


@pytest.mark.parametrize("bad", ["<lora:x:heavy>", "<lora:x:5>", "<lora:x:-4.5>"])
def test_bad_tags_are_clear(bad):
    with pytest.raises(LoraTagError, match="weight must be"):
        extract_lora_tags(f"a cat {bad}")


def test_merge_last_tag_wins_and_the_field_wins_over_tags():
    tags = [LoraSpec(name="a", weight=0.2), LoraSpec(name="b"), LoraSpec(name="A", weight=0.6)]
    merged, notes = merge_loras([], tags)
    assert [(x.name, x.weight) for x in merged] == [("a", 0.6), ("b", 1.0)] and len(notes) == 1
    merged, notes = merge_loras([LoraSpec(name="b", weight=-1)], tags)
    assert [(x.name, x.weight) for x in merged] == [("a", 0.6), ("b", -1.0)] and "replaces" in notes[-1]
    with pytest.raises(LoraTagError, match="at most 8"):
        merge_loras([], [LoraSpec(name=f"l{i}") for i in range(9)])


def test_the_pipeline_never_translates_a_tag():
    rec = PromptPipeline().run("ein Hund <lora:hund_stil:0.7> im Schnee", "blurry <lora:neg:1>",
                               options=PromptOptions(translate="lexicon"))
    assert "lora" not in rec.prompt and rec.step("loras").input.endswith("im Schnee")
    assert [(x.name, x.weight) for x in rec.loras] == [("hund_stil", 0.7)]
    assert rec.step("translate").input == "ein Hund im Schnee"
    assert rec.negative_prompt == "blurry" and any("negative prompt" in w for w in rec.warnings)
