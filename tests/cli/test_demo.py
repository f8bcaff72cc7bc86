"""`make run`'s first half: the demo makes one picture of each mode on the default model."""

from __future__ import annotations

from typer.testing import CliRunner

from bildwerk.cli import app
from bildwerk.images.metadata import read_png_metadata


def test_demo_runs_every_mode_on_the_default_model(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--steps", "2"])
    assert r.exit_code == 0, r.output
    made = sorted(p.name.split("-")[0] for p in tmp_path.glob("*.png"))
    assert made == ["image", "inpaint", "text"], made  # image-to-image, inpaint, text-to-image
    for p in tmp_path.glob("*.png"):
        record = read_png_metadata(p)["record"]
        assert record["model"]["name"] != "tiny" and record["request"]["prompt_record"] is not None
