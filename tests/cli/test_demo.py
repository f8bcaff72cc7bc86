"""`make run`'s first half: the demo makes one picture of each mode on the default model."""

from __future__ import annotations

from typer.testing import CliRunner

from bildwerk.cli import app
from bildwerk.images.metadata import read_png_metadata

DEMO_FILES = ["image-to-image-seed2.png", "inpaint-seed3.png", "text-to-image-seed1.png"]


def test_demo_runs_every_mode_on_the_default_model(tmp_path):
    # An earlier run's pictures (same seeds, same names) are replaced, and the demo says so.
    (tmp_path / "text-to-image-seed1.png").write_bytes(b"an earlier demo run")
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--steps", "2"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.glob("*.png")) == DEMO_FILES
    for p in tmp_path.glob("*.png"):
        record = read_png_metadata(p)["record"]
        assert record["model"]["name"] != "tiny" and record["request"]["prompt_record"] is not None
    assert " ".join(r.output.split()).count("replaced the earlier demo's picture") == 1
