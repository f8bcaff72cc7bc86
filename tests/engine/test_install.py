"""Installing a model by name (models/install.py) and what a model's folder tells without loading it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bildwerk.core.errors import (
    InvalidRequestError,
    ModelExistsError,
    ModelNotFoundError,
    UnsafeModelError,
)
from bildwerk.models.install import install_model, installed_models
from bildwerk.models.loader import load_model, model_languages, native_size_of, resolve_model
from bildwerk.models.policy import ModelPolicy


def test_a_training_run_is_installed_by_name_and_listed(tiny_models, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_models["sd"], run / "model")  # a run's final model/ (a CLIP fine-tune)
    (run / "model" / "bildwerk.json").write_text(json.dumps({"name": "bildwerk-model", "languages": ["de", "en"]}))
    m = install_model(run, "museum")
    assert m.path == resolve_model("museum").path  # the name the CLI and server resolve
    assert ModelPolicy.for_clients().permits("museum")  # and the server's clients may name
    assert load_model("museum", device="cpu").name == "museum"  # records show the installed name
    rows = {r.name: r for r in installed_models()}
    assert rows["museum"].family == "sd" and rows["museum"].languages == ["de", "en"]
    assert rows["museum"].native_size == load_model(str(tiny_models["sd"]), device="cpu").native_size
    assert rows["museum"].bytes > 0 and not rows["museum"].default
    assert rows["default"].languages is None and rows["default"].default  # the embedded one, any language
    with pytest.raises(ModelExistsError, match="--force"):
        install_model(run / "model", "museum")
    install_model(tiny_models["sdxl"], "museum", force=True, make_default=True)
    assert [r.family for r in installed_models() if r.name == "museum"] == ["sdxl"]
    assert resolve_model(None).path == resolve_model("museum").path  # --default: no --model needed
    assert not [p for p in (m.path.parent / ".incoming").iterdir()]  # no copy left behind


def test_install_refuses_pickles_non_models_and_bad_names(tiny_models, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_models["sd"], pickled)
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, pickled / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(UnsafeModelError):
        install_model(pickled, "p")
    (tmp_path / "pictures").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a diffusers model folder"):
        install_model(tmp_path / "pictures", "x")
    for bad in ("default", "../x", "a/b"):
        with pytest.raises(InvalidRequestError, match="cannot be a model's name"):
            install_model(tiny_models["sd"], bad)
    assert [r.name for r in installed_models()] == ["default"]


def test_a_models_languages_and_size_come_from_its_folder(tiny_models, tmp_path):
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "model_index.json").write_text("{}")
    assert model_languages(str(clip)) == ("en",)  # CLIP without a record: English, as before
    (clip / "bildwerk.json").write_text(json.dumps({"languages": ["de", "en"]}))
    assert model_languages(str(clip)) == ("de", "en")
    assert model_languages("default") is None and model_languages("openai:dall-e-3") is None  # any language
    assert native_size_of("default") == 64 and native_size_of(str(clip)) is None
    assert native_size_of("org/not-downloaded") is None
