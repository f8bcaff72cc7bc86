"""The model manager (models/install.py, models/catalog.py, `bildwerk models`): every kind listed
from bildwerk's folders and registered sources, single files installed by kind, LoRA runs,
removal that never touches a source, the default. In-process, tiny files, no weights loaded."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from harness.model_files import embedding, kohya_lora
from typer.testing import CliRunner

from bildwerk.cli import app
from bildwerk.core.errors import (
    InvalidRequestError,
    ModelExistsError,
    UnsafeModelError,
    UnsupportedModelError,
)
from bildwerk.models.catalog import catalog, find_entries
from bildwerk.models.install import install, remove, reset_default_model
from bildwerk.models.loader import chosen_default, resolve_model

runner = CliRunner()


def _cli(*args):
    from bildwerk.cli.common import out_console

    width, out_console.width = out_console.width, 400  # table cells are checked whole, not wrapped
    try:
        r = runner.invoke(app, ["models", *args])
    finally:
        out_console.width = width
    return r.exit_code, " ".join(r.output.split())


@pytest.fixture
def webui(tmp_path):
    """An A1111 folder with a LoRA, an embedding and a pickle nobody may load."""
    root = tmp_path / "webui"
    (root / "models" / "Stable-diffusion").mkdir(parents=True)
    kohya_lora(root / "models" / "Lora" / "inkpen.safetensors")
    embedding(root / "embeddings" / "badhands.safetensors")
    (root / "models" / "Lora" / "old.ckpt").write_bytes(b"\x80\x04junk")
    return root


def test_a_source_is_listed_in_place_and_its_files_are_never_deleted(webui, tiny_models):
    code, out = _cli("sources", "add", str(webui))
    assert code == 0 and "(a1111)" in out and "1 lora" in out and "never copied" in out
    code, out = _cli("add", str(tiny_models["sd"]), "--name", "tinysd")
    assert code == 0, out
    rows = [json.loads(line) for line in runner.invoke(app, ["models", "list", "--json"]).output.splitlines()]
    by = {(r["kind"], r["name"]): r for r in rows}
    assert by[("checkpoint", "default")]["source"] == "embedded" and by[("checkpoint", "default")]["default"]
    assert by[("checkpoint", "tinysd")]["modes"] == ["text-to-image", "image-to-image", "inpaint"]
    assert by[("checkpoint", "tinysd")]["native_size"] == 64 and by[("checkpoint", "tinysd")]["source"] == "bildwerk"
    ink = by[("lora", "inkpen")]
    assert ink["source"] == str(webui) and ink["layout"] == "a1111" and ink["bytes"] > 0
    assert ink["path"] == str(webui / "models" / "Lora" / "inkpen.safetensors")  # read where it is
    assert by[("embedding", "badhands")]["kind"] == "embedding"
    code, out = _cli("list", "--kind", "lora")
    assert code == 0 and "inkpen" in out and "tinysd" not in out and "old.ckpt" in out and "never loads" in out
    kohya_lora(webui / "models" / "Stable-diffusion" / "misplaced.safetensors")  # a LoRA in the checkpoints folder
    [misplaced] = find_entries("misplaced", "checkpoint")
    assert misplaced.modes == [] and misplaced.details["looks_like"] == "lora"
    assert "none:" in _cli("list", "--kind", "checkpoint")[1]  # "none: a LoRA file" in a narrow table

    code, out = _cli("remove", "inkpen")
    assert code == 2 and "never deletes" in out and "sources remove" in out
    assert (webui / "models" / "Lora" / "inkpen.safetensors").is_file()
    code, out = _cli("sources", "remove", str(webui))
    assert code == 0 and "not touched" in out
    assert [e.name for e in catalog("lora")] == [] and (webui / "models" / "Lora" / "inkpen.safetensors").is_file()
    assert _cli("sources", "remove", str(webui))[0] == 2


def test_single_files_install_into_the_folder_of_their_kind(tmp_path, webui):
    lora = kohya_lora(tmp_path / "dl" / "Ink Pen.safetensors")
    done = install(lora)  # the header says LoRA (models/inspect.py)
    assert done.kind == "lora" and done.name == "Ink Pen"
    assert done.path.parent.name == "loras" and done.path.read_bytes() == lora.read_bytes()
    [entry] = find_entries("ink pen", "lora")  # found as A1111 finds it: case-insensitively
    assert entry.source == "bildwerk" and entry.family == "sd1" and entry.variant == "kohya"
    assert entry.details["rank"] == 4
    with pytest.raises(InvalidRequestError, match="is a LoRA file, not a VAE; pass --kind lora"):
        install(lora, "other", kind="vae")
    with pytest.raises(ModelExistsError, match="--force"):
        install(lora, kind="lora")
    kohya_lora(lora, rank=8)
    assert install(lora, kind="lora", force=True).path.read_bytes() == lora.read_bytes()
    emb = install(embedding(tmp_path / "dl" / "style.safetensors"), "mystyle")
    assert emb.kind == "embedding" and emb.path.parent.name == "embeddings" and emb.path.name == "mystyle.safetensors"
    code, out = _cli("show", "mystyle")
    assert code == 0 and "embedding" in out and "base sd1" in out and "vectors 2" in out
    code, out = _cli("show", "Ink Pen")
    assert code == 0 and "rank 8" in out and "variant kohya" in out  # the replaced file
    code, out = _cli("list", "--kind", "lora")
    assert "for sd1" in out
    staging = [p for p in (done.path.parent / ".incoming").iterdir()]
    assert staging == []  # no part file left behind


def test_bad_files_get_one_clear_line(tmp_path):
    pickled = tmp_path / "sneaky.safetensors"
    torch.save({"w": torch.zeros(2)}, pickled)  # a pickle (zip) renamed
    with pytest.raises(UnsafeModelError, match="not a safetensors file"):
        install(pickled, kind="lora")
    good = kohya_lora(tmp_path / "good.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(UnsupportedModelError, match="damaged or truncated"):
        install(cut, kind="lora")
    with pytest.raises(InvalidRequestError, match="cannot be a name"):
        install(good, "a:b", kind="lora")
    code, out = _cli("add", str(tmp_path / "nothing-here"))
    assert code == 2 and "no file or folder" in out
    code, out = _cli("add", "org/not-here")  # the loader's one-line hub failure, offline
    assert code == 2 and "HF_HUB_OFFLINE" in out
    assert catalog("lora") == []


def test_a_lora_runs_adapter_installs_as_a_lora_and_its_merged_model_as_a_model(tmp_path, tiny_models):
    run = tmp_path / "museum-run"
    shutil.copytree(tiny_models["sd"], run / "model")
    for step in (9, 10):
        kohya_lora(run / "checkpoints" / f"step-{step}" / "lora" / "pytorch_lora_weights.safetensors", rank=step)
    kohya_lora(run / "lora" / "pytorch_lora_weights.safetensors", rank=2)
    code, out = _cli("add", str(run / "lora"))
    assert code == 0, out
    assert "installed LoRA museum-run" in out and "<lora:museum-run:0.8>" in out
    [entry] = find_entries("museum-run", "lora")
    assert entry.path.name == "museum-run.safetensors"
    assert entry.path.read_bytes() == (run / "lora" / "pytorch_lora_weights.safetensors").read_bytes()
    assert install(run, "museum", kind="lora").path.name == "museum.safetensors"
    shutil.rmtree(run / "lora")  # an older run: the newest checkpoint's adapter
    newest = install(run, "newest", kind="lora").path
    assert newest.read_bytes() == (run / "checkpoints" / "step-10" / "lora" / "pytorch_lora_weights.safetensors").read_bytes()
    done = install(run, "museum", make_default=True)  # the run itself: its merged model
    assert done.kind == "checkpoint" and done.default and chosen_default() == "museum"
    assert resolve_model(None).path == resolve_model("museum").path

    code, out = _cli("remove", "museum")
    assert code == 2 and "several" in out and "--kind" in out  # a model and a LoRA of that name
    removed = remove("museum", "checkpoint")
    assert removed.was_default and chosen_default() is None and not removed.path.exists()
    assert find_entries("museum", "lora")  # the LoRA of that name stays


def test_the_default_is_chosen_shown_and_reset(tiny_models):
    assert _cli("default", "nope")[0] == 2
    install(tiny_models["sd"], "tinysd")
    code, out = _cli("default", "tinysd")
    assert code == 0 and chosen_default() == "tinysd"
    assert "tinysd" in _cli("default")[1]
    assert [e.name for e in catalog("checkpoint") if e.default] == ["tinysd"]
    code, out = _cli("default", "--reset")
    assert code == 0 and chosen_default() is None and not reset_default_model()
    code, out = _cli("remove", "default")
    assert code == 2 and "embedded" in out
