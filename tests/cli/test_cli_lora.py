"""`--lora NAME[:WEIGHT]` on the command line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bildwerk.cli import app
from bildwerk.cli.common import _lora_flags
from bildwerk.core.paths import bildwerk_home
from bildwerk.images.metadata import read_png_metadata


def test_lora_flags_parse():
    assert _lora_flags(["a", "b:0.5", "c:d:-1"]) == [
        {"name": "a"}, {"name": "b", "weight": 0.5}, {"name": "c:d", "weight": -1.0}]
    assert _lora_flags(None) is None


@pytest.mark.extended  # a whole CLI run (~4 s); the option's parsing and bounds are checked above/below
def test_generate_with_lora_writes_the_tag_and_hash(tiny_models, tmp_path):
    from bildwerk.models.tiny import build_tiny_pipeline
    from bildwerk.models.tiny_lora import save_tiny_lora

    save_tiny_lora(bildwerk_home() / "loras" / "look.safetensors", build_tiny_pipeline("sd"))
    out = tmp_path / "x.png"
    args = ["generate", "a lake", "--model", str(tiny_models["sd"]), "--seed", "3", "--steps", "2", "-W", "64",
            "-H", "64", "--translate", "off", "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--lora", "look:0.6"])
    assert r.exit_code == 0, r.output
    meta = read_png_metadata(out)
    assert "<lora:look:0.6>" in meta["parameters"] and "Lora hashes" in meta["parameters"]
    assert meta["record"]["loras"][0]["weight"] == 0.6
    bad = CliRunner().invoke(app, [*args, "--lora", "look:nine", "--overwrite"])
    assert bad.exit_code == 2 and "NAME:WEIGHT" in bad.output
    missing = CliRunner().invoke(app, [*args, "--lora", "nope", "--overwrite"])
    assert missing.exit_code != 0 and "no LoRA named 'nope'" in missing.output


@pytest.mark.parametrize(("weight", "words"), [("9", "at most 4"), ("-5", "at least -4")])
def test_lora_weight_out_of_bounds_is_one_line(tiny_models, weight, words):
    r = CliRunner().invoke(app, ["generate", "x", "--model", str(tiny_models["sd"]), "--lora", f"look:{weight}"])
    assert r.exit_code == 2 and f"--lora weight must be {words}" in r.output
