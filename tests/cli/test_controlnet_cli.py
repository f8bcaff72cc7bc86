"""`bildwerk generate --control ...`: one ControlNet from the command line, recorded in the PNG."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from bildwerk.cli import app
from bildwerk.images.metadata import read_png_metadata

runner = CliRunner()


@pytest.mark.extended  # a model load of its own: the server and engine tests cover the rest
def test_generate_with_a_controlnet(tiny_models, tiny_controlnets, tmp_path):
    home = tmp_path / "bildwerk-home" / "controlnet"
    home.mkdir(parents=True)
    (home / "edges.safetensors").symlink_to(tiny_controlnets["cn-sd-file.safetensors"])
    pic = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(pic).line((4, 32, 60, 32), fill="black", width=2)
    pic.save(tmp_path / "drawing.png")
    out = tmp_path / "out"
    base = ["generate", "a house", "--model", str(tiny_models["sd"]), "--seed", "4", "--steps", "2",
            "-W", "64", "-H", "64", "--translate", "off", "--out", str(out)]
    r = runner.invoke(app, [*base, "--control", "edges", "--control-image", str(tmp_path / "drawing.png"),
                            "--control-preprocessor", "scribble", "--control-scale", "0.7", "--control-end", "0.5"])
    assert r.exit_code == 0, r.output
    unit = read_png_metadata(next(out.glob("*.png")))["record"]["request"]["controls"][0]
    assert (unit["model"], unit["preprocessor"], unit["scale"], unit["end"]) == ("edges", "scribble", 0.7, 0.5)
    r = runner.invoke(app, [*base, "--control", "edges"])
    assert r.exit_code != 0 and "--control needs --control-image" in r.output
    r = runner.invoke(app, [*base, "--control", "nowhere", "--control-image", str(tmp_path / "drawing.png")])
    assert r.exit_code != 0 and "no ControlNet named 'nowhere'" in r.output
