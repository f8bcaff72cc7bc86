"""`bildwerk generate --hires ... --vae ...`: the options reach the request, bad ones fail in one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bildwerk.cli import app
from bildwerk.images.metadata import read_png_metadata

runner = CliRunner()


@pytest.mark.extended  # a whole generation; the engine and server tests cover hires in make test
def test_generate_with_hires(tiny_models, tmp_path):
    out = tmp_path / "hires.png"
    r = runner.invoke(app, ["generate", "a lake", "--model", str(tiny_models["sd"]), "--seed", "3", "--steps", "2",
                            "-W", "64", "-H", "64", "--hires", "1.5", "--hires-upscaler", "Lanczos",
                            "--hires-strength", "0.5", "--hires-steps", "2", "--translate", "off", "--out", str(out)])
    assert r.exit_code == 0, r.output
    meta = read_png_metadata(out)
    assert meta["record"]["width"] == 96 and meta["record"]["details"]["hires"]["upscaler"] == "lanczos"
    assert meta["parsed"]["Size"] == "64x64" and meta["parsed"]["Hires upscale"] == 1.5


def test_hires_and_vae_option_errors_name_the_option(tiny_models, tmp_path):
    sd = str(tiny_models["sd"])
    r = runner.invoke(app, ["generate", "x", "--model", sd, "--hires-upscaler", "lanczos", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--hires-upscaler need --hires" in r.output
    r = runner.invoke(app, ["generate", "x", "--model", sd, "--hires", "8", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--hires must be" in r.output, r.output
    r = runner.invoke(app, ["generate", "x", "--model", sd, "--vae", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "asset_not_found" in r.output and "--kind vae" in r.output
