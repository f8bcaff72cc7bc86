"""Model references, safe loading and clear errors."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import sys

import pytest
import torch

from bildwerk.core.errors import ModelNotFoundError, UnsafeModelError, UnsupportedModelError
from bildwerk.models.loader import ModelManager, load_model, resolve_model
from bildwerk.models.safety import check_model_folder, sniff_weight_format


def test_pickle_checkpoint_folder_is_refused(tiny_models, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_models["sd"], folder)
    unet = folder / "unet"
    state = {"w": torch.zeros(2)}
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(state, unet / "diffusion_pytorch_model.bin")
    with pytest.raises(UnsafeModelError, match=r"unet has only non-safetensors weights.*safetensors only"):
        load_model(str(folder), device="cpu")


def test_pickle_renamed_to_safetensors_is_refused(tiny_models, tmp_path):
    folder = tmp_path / "disguised"
    shutil.copytree(tiny_models["sd"], folder)
    target = folder / "vae" / "diffusion_pytorch_model.safetensors"
    target.write_bytes(pickle.dumps({"evil": 1}, protocol=4))
    assert sniff_weight_format(target) == "pickle"
    with pytest.raises(UnsafeModelError, match="named .safetensors but its bytes are pickle"):
        check_model_folder(folder)


def test_real_safetensors_detected(tiny_models):
    assert sniff_weight_format(tiny_models["sd"] / "unet" / "diffusion_pytorch_model.safetensors") == "safetensors"
    check_model_folder(tiny_models["sd"])  # no error


def test_folder_without_model_index(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no model_index.json"):
        resolve_model(str(tmp_path / "empty"))


def test_a_file_that_is_no_safetensors_is_refused_by_its_bytes(tmp_path):
    # Single-file checkpoints load (tests/models/test_single_file.py); other bytes never do.
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(UnsupportedModelError, match="model.safetensors is not a safetensors file"):
        resolve_model(str(f))


def test_hub_id_offline_names_model_and_remedy():
    # HF_HUB_OFFLINE=1 (conftest): the real hub code path runs and fails fast.
    with pytest.raises(ModelNotFoundError) as exc:
        load_model("stabilityai/stable-diffusion-2-inpainting", device="cpu")
    msg = str(exc.value)
    assert "stabilityai/stable-diffusion-2-inpainting" in msg and "--model FOLDER" in msg
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg
    # The download command it names is one this installation has (huggingface_hub's own CLI).
    tool = re.search(r"`(\S+) download stabilityai/stable-diffusion-2-inpainting", msg).group(1)
    assert shutil.which(tool, path=os.path.dirname(sys.executable)), f"{tool} is not installed"


def test_hub_unreachable_says_why_in_whole_words(monkeypatch):
    from huggingface_hub import constants

    from bildwerk.models import loader

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reason = "Failed to resolve huggingface.co " + " ".join(f"word{i}" for i in range(60))
    try:
        try:
            raise ConnectionError(reason)
        except ConnectionError as inner:
            raise OSError("Cannot load model x/y: the model is not fully cached locally") from inner
    except OSError as outer:
        msg = loader._hub_failure("x/y", outer)
    assert "'x/y' is not on this machine and the Hugging Face Hub cannot be reached" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "hf download x/y" in msg
    shown = re.search(r"\((Failed to resolve[^)]*)\)", msg).group(1).removesuffix(" ...").split()
    assert 3 < len(shown) < 60 and set(shown) <= set(reason.split())  # shortened, never mid-word


def test_unknown_reference():
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model("no such model")


def test_no_default_model_message(monkeypatch, tmp_path):
    import bildwerk.models.loader as loader

    monkeypatch.setattr(loader, "EMBEDDED_DEFAULT", tmp_path / "nothing")
    with pytest.raises(ModelNotFoundError, match="no default model"):
        resolve_model(None)


def test_env_and_named_models(tiny_models, monkeypatch, tmp_path):
    monkeypatch.setenv("BILDWERK_MODEL", str(tiny_models["sd"]))
    assert resolve_model(None).path == tiny_models["sd"].resolve()
    home = tmp_path / "home"
    monkeypatch.setenv("BILDWERK_HOME", str(home))
    shutil.copytree(tiny_models["sdxl"], home / "models" / "mine")
    assert resolve_model("mine").path == (home / "models" / "mine").resolve()


def test_manager_keeps_one_model_and_switches(tiny_models):
    mgr = ModelManager(device="cpu")
    a = mgr.get(str(tiny_models["sd"]))
    assert mgr.get(str(tiny_models["sd"])) is a
    b = mgr.get(str(tiny_models["sdxl"]))
    assert b is not a and b.family == "sdxl"
    assert a.native_size == 64 and a.device.type == "cpu" and a.dtype == torch.float32


def test_fp16_keeps_the_vae_in_fp32(tiny_models):
    m = load_model(str(tiny_models["sd"]), device="cpu", dtype="float16")
    assert m.unet.dtype == torch.float16 and m.vae.dtype == torch.float32


def test_fp16_generation_runs_through_every_mode(tiny_models):
    import numpy as np
    from PIL import Image

    from bildwerk.core.request import build_request
    from bildwerk.engines.diffusers_engine import DiffusersEngine

    engine = DiffusersEngine(ModelManager(device="cpu", dtype="float16"))
    r = engine.generate(build_request(prompt="x", model=str(tiny_models["sd-inpaint"]), seed=1, steps=2))
    assert np.isfinite(np.asarray(r.images[0], dtype=np.float32)).all()
    image, mask = Image.new("RGB", (64, 64), "red"), Image.new("L", (64, 64), 0)
    mask.paste(255, (10, 10, 40, 40))
    r = engine.generate(build_request(mode="inpaint", prompt="x", image=image, mask=mask,
                                      model=str(tiny_models["sd-inpaint"]), seed=1, steps=2))
    assert r.images[0].size == (64, 64) and r.model["dtype"] == "float16"


# -- which references clients may name (models/policy.py) --------------------------------------

def _installed(tiny_models) -> str:
    from bildwerk.models.loader import bildwerk_home

    shutil.copytree(tiny_models["sd"], bildwerk_home() / "models" / "mine")
    return "mine"


@pytest.mark.parametrize("ref", ["/abs/folder", "~", "~/models/x", "../mine", "mine/..", "./mine", ".",
                                 "org/name", "C:\\models\\x", "no-such-name", "default/x"])
def test_client_policy_refuses_paths_hub_ids_and_unknown_names_alike(tiny_models, ref):
    from bildwerk.models.policy import NOT_AVAILABLE, ModelPolicy

    _installed(tiny_models)
    policy = ModelPolicy.for_clients(["/srv/registered", "org/registered"])
    with pytest.raises(ModelNotFoundError) as info:
        policy.check(ref)
    assert str(info.value) == NOT_AVAILABLE  # one message, whatever the reference names
    assert ModelPolicy.operator().permits(ref) and ModelPolicy.for_clients(allow_any=True).permits(ref)


def test_client_policy_permits_default_models_folder_registered_and_remote(tiny_models):
    from bildwerk.models.policy import ModelPolicy

    name = _installed(tiny_models)
    policy = ModelPolicy.for_clients([str(tiny_models["sd"]), None, "org/registered"])
    for ref in (None, "", "default", name, str(tiny_models["sd"]), "org/registered", "openai:gpt-image-1"):
        assert policy.permits(ref), ref
    assert not policy.permits(str(tiny_models["sd"]) + "/")  # exactly as registered, nothing resolved
    assert policy.names() == ["default", name, *sorted([str(tiny_models["sd"]), "org/registered"])]


def test_generator_applies_its_policy_at_check_and_again_at_resolve(tiny_models):
    from bildwerk.app.generate import Generator
    from bildwerk.core.spec import JobSpec
    from bildwerk.models.policy import ModelPolicy

    spec = JobSpec.build(origin="native", prompt="x", model=str(tiny_models["sdxl"]), steps=1)
    assert Generator().check(spec).path == tiny_models["sdxl"].resolve()  # the operator: any folder
    clients = Generator(policy=ModelPolicy.for_clients([str(tiny_models["sd"])]))
    for use in (clients.check, clients.resolve):  # the worker's path re-checks a stored job
        with pytest.raises(ModelNotFoundError, match="not available on this server"):
            use(spec)
    with pytest.raises(ModelNotFoundError, match="not available on this server"):
        clients.load(spec.request.model)  # the worker loads a queue head's model before claiming it
    assert clients.models.current is None
    assert clients.check_model(str(tiny_models["sd"])).path == tiny_models["sd"].resolve()
