"""The CLI end to end: generate, vary, inpaint, info, with clear errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from bildwerk.cli import app
from bildwerk.images.metadata import read_png_metadata

runner = CliRunner()


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result


@pytest.fixture
def inputs(tmp_path):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    img_path = tmp_path / "in.png"
    img.save(img_path)
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).rectangle((30, 20, 70, 60), fill=255)
    mask_path = tmp_path / "mask.png"
    mask.save(mask_path)
    return img_path, mask_path


def test_generate_writes_png_with_metadata(tiny_models, tmp_path):
    out = tmp_path / "out"
    r = _invoke("generate", "ein See im Wald", "--model", str(tiny_models["sd"]), "--seed", "42",
                "--steps", "3", "-n", "2", "--out", str(out), "--scheduler", "euler_a", "--translate", "off")
    assert r.exit_code == 0, r.output
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["text-to-image-seed42.png", "text-to-image-seed43.png"]
    meta = read_png_metadata(files[0])
    assert meta["parsed"]["prompt"] == "ein See im Wald"
    assert meta["parsed"]["Seed"] == 42 and meta["parsed"]["Sampler"] == "Euler a"
    assert meta["record"]["request"]["steps"] == 3


def test_vary_and_info(tiny_models, tmp_path, inputs):
    img_path, _ = inputs
    out = tmp_path / "v.png"
    r = _invoke("vary", str(img_path), "as a watercolor", "--model", str(tiny_models["sd"]),
                "--strength", "0.5", "--steps", "4", "--seed", "7", "--out", str(out))
    assert r.exit_code == 0, r.output
    # The tiny model's own side is 64 px: the 128x96 picture is worked (and returned) at about
    # that, aspect kept, and the user is told so before the run (the line before the file's).
    size = Image.open(out).size
    assert size != (128, 96) and min(size) == 64 and size[0] > size[1]
    flat = " ".join(r.output.split())  # the console wraps long lines
    assert f"warning: image-to-image works at {size[0]}x{size[1]}" in flat and "128x96" in flat
    assert flat.index("works at") < flat.index(str(out.name))
    info = _invoke("info", str(out), "--json")
    assert info.exit_code == 0, info.output
    data = json.loads(info.output)
    (warning,) = data["record"]["request"]["warnings"]
    assert f"warning: {warning}" in flat
    assert data["record"]["request"]["mode"] == "image-to-image"
    assert data["record"]["request"]["strength"] == 0.5
    plain = _invoke("info", str(out))
    assert "as a watercolor" in plain.output and "Denoising strength" in plain.output


def test_inpaint_keeps_outside_pixels(tiny_models, tmp_path, inputs):
    img_path, mask_path = inputs
    out = tmp_path / "i.png"
    r = _invoke("inpaint", str(img_path), str(mask_path), "Hochhäuser", "--model", str(tiny_models["sd-inpaint"]),
                "--steps", "3", "--seed", "1", "--mask-blur", "3", "--out", str(out))
    assert r.exit_code == 0, r.output
    src = np.asarray(Image.open(img_path).convert("RGB"))
    res = np.asarray(Image.open(out).convert("RGB"))
    inside = np.asarray(Image.open(mask_path)) > 127
    assert np.array_equal(src[~inside], res[~inside])
    assert not np.array_equal(src[inside], res[inside])


def test_bad_inputs_exit_2_with_message(tiny_models, tmp_path, inputs):
    img_path, _ = inputs
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a picture")
    r = _invoke("vary", str(junk), "x", "--model", str(tiny_models["sd"]))
    assert r.exit_code == 2 and "invalid_image" in r.output
    small_mask = tmp_path / "small.png"
    Image.new("L", (10, 10), 255).save(small_mask)
    r = _invoke("inpaint", str(img_path), str(small_mask), "x", "--model", str(tiny_models["sd"]))
    assert r.exit_code == 2 and "must match" in r.output
    r = _invoke("generate", "x", "--model", str(tiny_models["sd"]), "--width", "100")
    assert r.exit_code == 2 and "multiple of 8" in r.output
    r = _invoke("generate", "x", "--model", str(tmp_path / "missing"))
    assert r.exit_code == 2 and "model_not_found" in r.output


def _one_line_error(r, *expected: str) -> str:
    """A bad input: exit code 2, one line (no traceback, no usage box), naming what to change."""
    line = r.output.strip()
    assert r.exit_code == 2 and "\n" not in line and line.startswith("error"), r.output
    for part in expected:
        assert part in line, line
    return line


def test_bad_values_are_one_line_naming_the_option(tiny_models, inputs):
    from bildwerk.core.bounds import MAX_IMAGES, MAX_STEPS

    img_path, mask_path = inputs
    sd = str(tiny_models["sd"])
    _one_line_error(_invoke("generate", "x", "--model", sd, "--steps", "0"), f"--steps must be between 1 and {MAX_STEPS} (got 0)")
    _one_line_error(_invoke("generate", "x", "--model", sd, "--steps", "200"), "--steps", "(got 200)")
    _one_line_error(_invoke("generate", "x", "--model", sd, "-n", "9"), f"--num-images must be between 1 and {MAX_IMAGES} (got 9)")
    _one_line_error(_invoke("generate", "x", "--model", sd, "--height", "100"), "--height must be a multiple of 8")
    _one_line_error(_invoke("inpaint", str(img_path), str(mask_path), "x", "--model", sd, "--padding", "99999"), "--padding")
    _one_line_error(_invoke("generate", "x", "--model", sd, "--paraphrase", "99"), "--paraphrase")
    _one_line_error(_invoke("generate", "x", "--model", sd, "--scheduler", "bogus"), "unknown scheduler 'bogus'", "Euler a")
    _one_line_error(_invoke("generate", "x", "--model", sd, "--style", "nope"), "unknown style 'nope'", "watercolor")


def test_missing_files_and_devices_are_one_line(tiny_models, tmp_path, inputs, monkeypatch):
    import torch

    img_path, _ = inputs
    sd = str(tiny_models["sd"])
    _one_line_error(_invoke("generate", "x", "--model", str(tmp_path / "missing")), "model_not_found")
    _one_line_error(_invoke("vary", str(tmp_path / "missing.png"), "x", "--model", sd), "not found", "missing.png")
    info = _invoke("info", str(tmp_path / "missing.png"))
    assert "(error)" not in _one_line_error(info, "not found", "missing.png")  # no empty error code
    (tmp_path / "notes.txt").write_text("not a picture")
    _one_line_error(_invoke("inpaint", str(img_path), str(tmp_path / "notes.txt"), "x", "--model", sd), "invalid_image")
    # A device that is not here, told before any model loads (no "loading model" bar).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _one_line_error(_invoke("generate", "x", "--model", sd, "--device", "cuda"),
                    f"--device cuda: no CUDA device here (torch {torch.__version__})", "--device cpu")
    _one_line_error(_invoke("generate", "x", "--model", sd, "--device", "gpu"), "--device gpu", "cpu")
    _one_line_error(_invoke("generate", "x", "--model", sd, "--dtype", "fp64"), "unknown dtype 'fp64'", "float32")


def test_out_file_is_never_overwritten_silently(tiny_models, tmp_path):
    sd = str(tiny_models["sd"])
    out = tmp_path / "apple.png"
    out.write_bytes(b"my own picture")
    r = _invoke("generate", "an apple", "--model", sd, "--steps", "1", "--seed", "5", "--out", str(out))
    _one_line_error(r, "apple.png already exists", "--overwrite")
    assert out.read_bytes() == b"my own picture" and "loading model" not in r.output  # refused before work
    # Several images for one file name are named by their own seeds (image i: seed + i).
    (tmp_path / "apple-seed6.png").write_bytes(b"mine too")
    r = _invoke("generate", "an apple", "--model", sd, "--seed", "5", "-n", "2", "--out", str(out))
    _one_line_error(r, "apple-seed6.png already exists")
    r = _invoke("generate", "an apple", "--model", sd, "--steps", "1", "--seed", "5", "--out", str(out), "--overwrite")
    assert r.exit_code == 0, r.output
    assert read_png_metadata(out)["parsed"]["Seed"] == 5


def test_out_folder_keeps_earlier_files_and_says_so(tiny_models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "text-to-image-seed8.png").write_bytes(b"an earlier result")
    r = _invoke("generate", "an apple", "--model", str(tiny_models["sd"]), "--steps", "1", "--seed", "8", "-n", "2",
                "--out", str(out))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("*.png")) == [
        "text-to-image-seed8-v2.png", "text-to-image-seed8.png", "text-to-image-seed9.png"]
    assert (out / "text-to-image-seed8.png").read_bytes() == b"an earlier result"
    assert read_png_metadata(out / "text-to-image-seed8-v2.png")["parsed"]["Seed"] == 8
    note = " ".join(r.output.split())
    assert "text-to-image-seed8.png was already there, so this one is text-to-image-seed8-v2.png" in note
    assert "--overwrite" in note


def test_verbose_gives_the_libraries_their_voice_back(monkeypatch):
    import logging

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from bildwerk.cli.common import _QUIET_ENV

    for key in _QUIET_ENV:  # restored after the test, whatever the commands set
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    assert _invoke("samplers").exit_code == 0
    assert not diffusers_logging.is_progress_bar_enabled()
    assert transformers_logging.get_verbosity() == logging.ERROR
    assert os.environ["TQDM_DISABLE"] == "1" and os.environ["DIFFUSERS_VERBOSITY"] == "error"
    assert _invoke("--verbose", "samplers").exit_code == 0
    assert diffusers_logging.is_progress_bar_enabled() and diffusers_logging.get_verbosity() == logging.WARNING
    assert transformers_logging.get_verbosity() == logging.WARNING
    assert not set(_QUIET_ENV) & set(os.environ)
    assert _invoke("samplers").exit_code == 0 and not diffusers_logging.is_progress_bar_enabled()
    monkeypatch.setenv("BILDWERK_VERBOSE", "1")  # the variable is --verbose too
    assert _invoke("samplers").exit_code == 0 and diffusers_logging.is_progress_bar_enabled()


def test_info_on_image_without_metadata(tmp_path):
    p = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(p)
    r = _invoke("info", str(p))
    assert r.exit_code == 1 and "no generation metadata" in " ".join(r.output.split())


def test_console_script_runs_and_only_bildwerk_speaks(tiny_models, tmp_path):
    # The installed entry point, in a fresh process, as a user would call it: the libraries'
    # warnings, logs and progress bars (printed while they import and load) stay quiet.
    from bildwerk.cli.common import _QUIET_ENV

    exe = os.path.join(os.path.dirname(sys.executable), "bildwerk")
    out = tmp_path / "cli.png"
    env = {k: v for k, v in os.environ.items() if k not in _QUIET_ENV and k != "BILDWERK_VERBOSE"}
    proc = subprocess.run(
        [exe, "generate", "a red apple", "--model", str(tiny_models["sd"]), "--steps", "2", "--seed", "5", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
        env={**env, "BILDWERK_DEVICE": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and "seed 5" in proc.stdout
    assert "done" in proc.stderr  # bildwerk's own progress
    for noise in ("warning", "[transformers]", "it/s", "loading pipeline components", "traceback"):
        assert noise not in proc.stderr.lower(), proc.stderr


def _folder(root, n=6):
    import csv as _csv

    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        color = (40 * i % 255, 200, 90)
        Image.new("RGB", (32, 32), color).save(root / f"images/{i}.png")
        rows.append({"file_name": f"images/{i}.png", "text": f"green square {i}", "text_de": f"grünes Quadrat {i}"})
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
        w = _csv.DictWriter(f, fieldnames=["file_name", "text", "text_de"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_train_refuses_a_broken_folder_listing_every_problem(tmp_path):
    folder = _folder(tmp_path / "data")
    (folder / "images" / "2.png").unlink()
    (folder / "images" / "3.png").write_bytes(b"not a png")
    text = (folder / "metadata.csv").read_text(encoding="utf-8").replace("green square 4", "")
    (folder / "metadata.csv").write_text(text, encoding="utf-8")
    r = _invoke("train", str(folder), "--out", str(tmp_path / "run"), "--base", "x")
    out = " ".join(r.output.split())
    assert r.exit_code == 2
    assert "images/2.png" in out and "images/3.png" in out and "row 5" in out
    assert not (tmp_path / "run").exists()  # nothing started


def test_train_vae_then_unet_from_the_cli(tmp_path):
    folder = _folder(tmp_path / "data")
    r = _invoke("train-vae", str(folder), "--out", str(tmp_path / "vae"), "--steps", "2", "--resolution", "32",
                "--batch-size", "2")
    assert r.exit_code == 0, r.output
    vae = tmp_path / "vae" / "vae"
    assert (vae / "config.json").is_file()
    r = _invoke("train-vae", str(folder), "--out", str(tmp_path / "dec"), "--decoder-only")
    assert r.exit_code == 2 and "--from" in r.output  # nothing to fine-tune
    r = _invoke("train-vae", str(folder), "--out", str(tmp_path / "dec"), "--decoder-only",
                "--from", str(tmp_path / "nowhere"))
    assert r.exit_code == 2 and "no VAE there" in " ".join(r.output.split())
    assert not (tmp_path / "dec").exists()  # nothing started
    r = _invoke("train-vae", str(folder), "--out", str(tmp_path / "dec"), "--steps", "1", "--resolution", "32",
                "--batch-size", "2", "--crop", "0", "--from", str(vae), "--decoder-only")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "dec" / "vae" / "quality.json").read_text())["decoder_only"] is True
    r = _invoke("train", str(folder), "--vae", str(vae), "--out", str(tmp_path / "unet"), "--steps", "2",
                "--resolution", "32", "--batch-size", "2", "--checkpoint-every", "1", "--sample-every", "2",
                "--sample-prompt", "grünes Quadrat")
    assert r.exit_code == 0, r.output
    model = tmp_path / "unet" / "model"
    assert (model / "bildwerk.json").is_file() and (tmp_path / "unet" / "samples" / "step-000002.png").is_file()
    g = _invoke("generate", "ein grünes Quadrat", "--model", str(model), "--steps", "2", "--out", str(tmp_path / "g.png"))
    assert g.exit_code == 0, g.output
    assert Image.open(tmp_path / "g.png").size == (32, 32)
    # Encode once, train from the file: its size comes from the file, no folder check needed.
    prepared = tmp_path / "shapes.safetensors"
    r = _invoke("prepare", str(folder), "--vae", str(vae), "--out", str(prepared), "--resolution", "32", "--compact")
    assert r.exit_code == 0, r.output
    assert prepared.is_file() and "bildwerk train" in r.output
    r = _invoke("train", str(prepared), "--vae", str(vae), "--out", str(tmp_path / "from-file"), "--steps", "1",
                "--batch-size", "2", "--sample-every", "0")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "from-file" / "model" / "unet").is_dir()
    assert not (tmp_path / "from-file" / "samples").exists()
    r = _invoke("train", str(prepared), "--vae", str(vae), "--out", str(tmp_path / "bad"), "--resolution", "64")
    assert r.exit_code != 0 and "32 px" in " ".join(r.output.split())
    r = _invoke("prepare", str(folder), "--vae", str(vae), "--out", str(tmp_path / "x.pt"))
    assert r.exit_code != 0 and ".safetensors" in r.output


def test_museum_fine_tunes_the_default_on_german_captions_and_installs_it(tmp_path, caplog):
    import csv as _csv
    import logging

    root = tmp_path / "museum"
    (root / "images").mkdir(parents=True)
    captions = ["Holzschnitt eines Pferdes", "Porträt einer Frau mit Haube", "Ein roter Kreis auf weißem Grund"]
    with (root / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
        w = _csv.DictWriter(f, fieldnames=["file_name", "text"])  # German in the "text" column
        w.writeheader()
        for i, text in enumerate(captions):
            Image.new("RGB", (40, 40), (80 * i, 120, 200)).save(root / f"images/{i}.png")
            w.writerow({"file_name": f"images/{i}.png", "text": text})
    run = tmp_path / "runs" / "museum"
    diffusers_log = logging.getLogger("diffusers")
    diffusers_log.addHandler(caplog.handler)
    try:
        r = _invoke("train", str(root), "--out", str(run), "--base", "default", "--method", "lora", "--steps", "6",
                    "--batch-size", "2", "--lr", "1e-3", "--checkpoint-every", "6", "--sample-every", "0")
    finally:
        diffusers_log.removeHandler(caplog.handler)
    out = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert "cannot be saved" not in caplog.text  # no warning at each checkpoint
    assert "resolution 64 px (the base model's own)" in out  # not 512
    assert "captions: de 3" in out  # not "languages en"
    assert max(e["lr"] for e in map(json.loads, (run / "train_log.jsonl").open())) >= 0.95e-3  # warm-up 1 of 6
    assert json.loads((run / "model" / "bildwerk.json").read_text())["languages"] == ["de"]
    # A LoRA run's result is its adapter: the one command installs it as a LoRA by the run's name.
    assert f"bildwerk models add {run / 'lora'} --name museum" in out and "<lora:museum:1>" in out
    assert f"bildwerk models add {run / 'model'} --name museum-merged" in out  # the merged model, if wanted
    r = _invoke("models", "add", str(run / "lora"), "--name", "museum")
    assert r.exit_code == 0 and "installed LoRA museum" in " ".join(r.output.split()), r.output
    r = _invoke("models", "add", str(run / "model"), "--name", "museum")
    assert r.exit_code == 0, r.output
    r = _invoke("models", "add", str(run / "model"), "--name", "museum")
    assert r.exit_code == 2 and "--force" in r.output
    listed = _invoke("models", "list").output
    assert "museum" in listed and "64 px" in listed and "lora" in listed


def test_info_shows_a1111_brackets_literally(tiny_models, tmp_path):
    out = tmp_path / "b.png"
    r = _invoke("generate", "a [cat] on (a beach:1.2)", "--model", str(tiny_models["sd"]), "--steps", "1",
                "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "a [cat] on (a beach:1.2)" in _invoke("info", str(out)).output


# -- the prompt pipeline through the CLI ----------------------------------------------------

def test_prompt_command_shows_each_step():
    r = _invoke("prompt", "ein See", "--enhance", "--model", "nonexistent-english-model-dir", "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert [s["step"] for s in rec["steps"]] == ["language", "translate", "lexicon"]
    assert rec["steps"][1]["output"] == "a lake" and rec["prompt"].startswith("a lake, ")
    table = _invoke("prompt", "a {red|blue} car", "--style", "watercolor", "--seed", "2")
    assert table.exit_code == 0 and "wildcards" in table.stdout and "style" in table.stdout
    order = _invoke("prompt", "a cat", "--order", "paraphrase-first", "--json")
    assert order.exit_code == 0, order.output
    assert json.loads(order.stdout)["steps"][0]["step"] == "language"
    bad = _invoke("prompt", "a cat", "--order", "keywords-first")
    assert bad.exit_code == 2 and "paraphrase-first" in bad.output
    # Enhancement on the default (multilingual) model: matched in German, and said when nothing matched.
    de = json.loads(_invoke("prompt", "ein See", "--enhance", "--json").stdout)
    assert de["prompt"].startswith("ein See, ") and de["steps"][-1]["details"]["terms"] == ["lake"]
    none = _invoke("prompt", "ein Quxlbach", "--enhance")
    assert "warning" in none.output and "enhancement" in none.output


def test_generate_records_prompt_steps_in_png(tiny_models, tmp_path):
    out = tmp_path / "o.png"
    r = _invoke("generate", "ein See", "--model", str(tiny_models["sd"]), "--seed", "3", "--steps", "2",
                "--style", "watercolor", "--out", str(out))
    assert r.exit_code == 0, r.output
    meta = read_png_metadata(out.read_bytes())
    record = meta["record"]["request"]["prompt_record"]
    assert record["original"] == "ein See" and record["language"] == "de"
    assert [s["step"] for s in record["steps"]] == ["language", "translate", "style"]
    assert "a lake" in meta["record"]["request"]["prompt"]


def test_bad_prompt_options_and_unknown_style_fail_clearly(tiny_models):
    r = _invoke("generate", "a cat", "--model", str(tiny_models["sd"]), "--translate", "papago")
    assert r.exit_code == 2 and "translate" in r.output
    r = _invoke("generate", "a cat", "--model", str(tiny_models["sd"]), "--style", "nope")
    assert r.exit_code == 2 and "unknown style" in r.output


def test_describe_command_offline(inputs):
    img, _ = inputs
    r = _invoke("describe", str(img), "--edit", "make it a watercolor")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[0] and "merged:" in r.stdout and "watercolor" in r.stdout


def test_styles_command_lists_shipped_styles():
    r = _invoke("styles")
    assert r.exit_code == 0 and "watercolor" in r.stdout


def test_default_model_rejects_a_bad_override_before_training(tmp_path):
    folder = _folder(tmp_path / "data")
    r = _invoke("default-model", "--data", str(folder), "--work", str(tmp_path / "work"), "--no-install",
                "--prediction-type", "sample")
    assert r.exit_code == 2 and "prediction_type" in r.output
    assert not (tmp_path / "work" / "vae-run").exists()  # nothing was trained
    r = _invoke("default-model", "--data", str(folder), "--work", str(tmp_path / "work"), "--no-install",
                "--recipe", "tpu")
    assert r.exit_code == 2 and "unknown recipe 'tpu'" in r.output
    assert not (tmp_path / "work" / "vae-run").exists()


def test_history_and_export_from_the_command_line(tmp_path, monkeypatch):
    from bildwerk.cli.common import out_console
    from bildwerk.images.io import encode_png
    from bildwerk.jobs.store import Store

    store = Store(tmp_path / "store")
    words = "ein ruhiger See zwischen hohen Tannen am Rand der alten Stadtmauer bei Sonnenuntergang"
    request = {"mode": "inpaint", "prompt": "a lake", "seed": 4, "model": "default",
               "origin_inputs": {"model": "local", "text_fidelity": 0.7}}
    picture, mask = encode_png(Image.new("RGB", (64, 64), "green")), encode_png(Image.new("L", (64, 64), 255))
    job = store.create_job(request=request, api="museum", engine="local", inputs={"image": picture, "mask": mask})
    assert store.claim_next().id == job.id
    record = {"request": {**request, "prompt_record": {"original": words, "language": "de",
                                                         "prompt": "a lake", "steps": []}},
              "model": {"name": "bildwerk-default"}}
    result = encode_png(Image.new("RGB", (64, 64), "blue"))
    store.finish(job.id, [(result, 4)], record)
    for twin in ("twin-a", "twin-b"):  # two ids that start alike
        store.create_job(request={"prompt": "x", "seed": 1}, api="native", engine="local", job_id=twin)

    monkeypatch.setattr(out_console, "width", 80)  # a narrow terminal
    listed = _invoke("history", "--store", str(tmp_path / "store"), "--q", "See")
    assert listed.exit_code == 0 and "museum" in listed.stdout
    assert job.id in listed.stdout.split()  # whole, on one line: what export --id takes
    assert " ".join(listed.stdout.split()).count(words) == 1  # wrapped, not cut
    as_json = _invoke("history", "--store", str(tmp_path / "store"), "--json", "-n", "5")
    entries = [json.loads(line) for line in as_json.stdout.splitlines()]
    mine = next(e for e in entries if e["id"] == job.id)
    assert mine["original_prompt"] == words and mine["origin_inputs"]["text_fidelity"] == 0.7
    assert {e["id"] for e in entries} == {job.id, "twin-a", "twin-b"}

    out = tmp_path / "set"
    r = _invoke("export", str(out), "--store", str(tmp_path / "store"), "--id", job.id[:6])  # a unique start
    assert r.exit_code == 0, r.output
    assert "1 images" in r.stdout and "ready for" in r.stdout
    with (out / "metadata.csv").open(encoding="utf-8", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["text"] == "a lake" and row["text_de"] == words
    # The visitor's picture and mask, beside the result they belong to.
    assert (out / row["input_image"]).read_bytes() == picture and (out / row["input_mask"]).read_bytes() == mask
    assert (out / row["file_name"]).read_bytes() == result
    assert {Path(row[c]).stem.split("_")[0] for c in ("file_name", "input_image", "input_mask")} == {job.id}
    again = _invoke("export", str(out), "--store", str(tmp_path / "store"))
    assert again.exit_code == 2 and "empty folder" in again.output
    twins = _invoke("export", str(tmp_path / "t"), "--store", str(tmp_path / "store"), "--id", "twin")
    assert twins.exit_code == 2 and "several jobs" in twins.output and "twin-a" in twins.output
    unknown = _invoke("export", str(tmp_path / "u"), "--store", str(tmp_path / "store"), "--id", "zzz")
    assert unknown.exit_code == 2 and "no job with id 'zzz'" in unknown.output
    missing = _invoke("history", "--store", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "no bildwerk store" in missing.output


def test_generate_with_a_remote_model(tmp_path, monkeypatch):
    # The CLI reaches every engine the service does: openai:MODEL through the loopback stand-in.
    from fakes.openai_server import FakeOpenAIServer

    with FakeOpenAIServer(required_key="k-test") as server:
        monkeypatch.setenv("BILDWERK_OPENAI_API_KEY", "k-test")
        monkeypatch.setenv("BILDWERK_OPENAI_BASE_URL", server.base_url)
        out = tmp_path / "remote.png"
        r = _invoke("generate", "a lighthouse", "--model", "openai:gpt-image-1", "--seed", "3",
                    "--out", str(out), "--width", "512", "--height", "512")
        assert r.exit_code == 0, r.output
        assert out.is_file() and Image.open(out).size == (512, 512)
        assert any(q.path == "/v1/images/generations" for q in server.requests)


@pytest.mark.extended  # 13 s of subprocesses
def test_threads_option_reaches_torch(tiny_models, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "bildwerk")
    env = {k: v for k, v in os.environ.items() if k != "BILDWERK_THREADS"}
    bad = subprocess.run([exe, "generate", "x", "--model", str(tiny_models["sd"])], capture_output=True,
                         text=True, timeout=300, env={**env, "BILDWERK_THREADS": "lots"})
    assert bad.returncode != 0 and "BILDWERK_THREADS" in bad.stdout + bad.stderr
    assert len((bad.stdout + bad.stderr).strip().splitlines()) <= 3  # one line, no traceback


def test_thread_count_comes_from_the_setting(monkeypatch):
    import torch

    from bildwerk.core.threads import thread_count, usable_cpus
    from bildwerk.models.devices import apply_threads

    monkeypatch.delenv("BILDWERK_THREADS", raising=False)
    assert thread_count() == usable_cpus()
    monkeypatch.setenv("BILDWERK_THREADS", "1")
    assert apply_threads() == 1 and torch.get_num_threads() == 1
