"""Single-file checkpoints: the original layout loads offline into the engine's model, by path or
by name, with its prediction type decided and recorded; bad files are refused in one line."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from bildwerk.cli import app
from bildwerk.core.errors import NotConfiguredError, UnsafeModelError, UnsupportedModelError
from bildwerk.core.request import build_request
from bildwerk.models.assets import AssetNotFoundError, add_source
from bildwerk.models.loader import load_model, native_size_of, resolve_model
from bildwerk.models.policy import NOT_AVAILABLE, ModelPolicy
from bildwerk.models.single_file import check_checkpoint, prediction_type
from bildwerk.models.tiny_single_file import build_tiny_single_pipeline


def _arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.int16)


def _same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])][:3]


@pytest.mark.parametrize("kind", ["sd", "sd2-v", "sdxl"])
def test_round_trip_gives_the_folder_models_weights(tiny_single_files, single_file_configs, kind):
    # The original-layout file, read by diffusers' single-file loader, is exactly the pipeline written.
    m = load_model(str(tiny_single_files[kind]), device="cpu", dtype="float32")
    ref = build_tiny_single_pipeline(kind)
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(ref, part, None) is not None:
            _same_weights(getattr(m.pipe, part), getattr(ref, part))
    assert m.family == ("sdxl" if kind == "sdxl" else "sd")
    facts = m.describe()["single_file"]
    assert facts["file"] == f"tiny-{kind}.safetensors"
    assert facts["prediction_type"] == ("v_prediction" if kind == "sd2-v" else "epsilon")
    assert m.pipe.scheduler.config.prediction_type == facts["prediction_type"]


def test_a_single_file_paints_what_its_folder_paints(engine, tiny_models, tiny_single_files, single_file_configs):
    request = dict(prompt="a red house", seed=5, steps=2, width=64, height=64)
    folder = engine.generate(build_request(model=str(tiny_models["sd"]), **request))
    single = engine.generate(build_request(model=str(tiny_single_files["sd"]), **request))
    assert np.array_equal(_arr(folder.images[0]), _arr(single.images[0]))
    assert single.model["single_file"]["family"] == "sd1"  # the record says what was loaded
    assert single.model["name"] == "tiny-sd"


def test_inpainting_single_file_inpaints_as_its_folder(engine, tiny_models, tiny_single_files, single_file_configs):
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    request = dict(mode="inpaint", prompt="a cat", image=image, mask=mask, seed=2, steps=2)
    single = engine.generate(build_request(model=str(tiny_single_files["sd-inpaint"]), **request))
    folder = engine.generate(build_request(model=str(tiny_models["sd-inpaint"]), **request))
    assert single.model["unet_in_channels"] == 9
    assert np.array_equal(_arr(folder.images[0]), _arr(single.images[0]))
    outside = np.asarray(mask) == 0
    assert np.array_equal(_arr(single.images[0])[outside], _arr(image)[outside])


@pytest.mark.extended
def test_sdxl_inpainting_single_file_inpaints(engine, tiny_single_files, single_file_configs):
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    r = engine.generate(build_request(mode="inpaint", prompt="a cat", image=image, mask=mask, seed=1, steps=2,
                                      model=str(tiny_single_files["sdxl-inpaint"])))
    assert r.model["unet_in_channels"] == 9 and r.model["family"] == "sdxl"


@pytest.mark.extended  # test time: make test keeps the cheaper cases of this feature
def test_prediction_type_from_a1111_yaml_or_sidecar_changes_the_picture(engine, tiny_single_files,
                                                                         single_file_configs, tmp_path):
    f = tmp_path / "sd2.safetensors"
    shutil.copyfile(tiny_single_files["sd2-v"], f)
    request = dict(prompt="a lake", seed=4, steps=2, width=64, height=64)
    v = engine.generate(build_request(model=str(f), **request))
    assert v.model["single_file"]["prediction_from"] == "default"
    f.with_suffix(".yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n", "utf-8")  # no "v"
    eps = engine.generate(build_request(model=str(f), **request))
    assert (eps.model["single_file"]["prediction_type"], eps.model["single_file"]["prediction_from"]) == \
        ("epsilon", ".yaml")
    assert not np.array_equal(_arr(v.images[0]), _arr(eps.images[0]))
    (tmp_path / "sd2.bildwerk.json").write_text(json.dumps({"prediction_type": "v"}), "utf-8")  # wins over yaml
    assert prediction_type(check_checkpoint(f)) == ("v_prediction", ".bildwerk.json")
    (tmp_path / "sd2.bildwerk.json").write_text(json.dumps({"prediction_type": "x0"}), "utf-8")
    with pytest.raises(UnsupportedModelError, match='prediction_type must be "epsilon" or "v_prediction"'):
        prediction_type(check_checkpoint(f))


def test_checkpoints_by_name_from_the_models_folder_and_an_a1111_folder(tiny_single_files, tmp_path):
    from bildwerk.models.loader import models_dir

    models_dir().mkdir(parents=True)
    shutil.copyfile(tiny_single_files["sd"], models_dir() / "mine.safetensors")
    webui = tmp_path / "webui"
    (webui / "models" / "Stable-diffusion" / "anime").mkdir(parents=True)
    shutil.copyfile(tiny_single_files["sdxl"], webui / "models" / "Stable-diffusion" / "anime" / "theirs.safetensors")
    add_source(webui)
    assert resolve_model("mine").path == (models_dir() / "mine.safetensors").resolve()
    assert resolve_model("theirs").path.name == "theirs.safetensors"
    assert resolve_model("theirs.safetensors").path.name == "theirs.safetensors"
    assert native_size_of("theirs") == 1024  # no configs here: the family's size
    (webui / "models" / "Stable-diffusion" / "old.ckpt").write_bytes(pickle.dumps({}, protocol=2))
    with pytest.raises(AssetNotFoundError, match="'old' is a pickle file"):
        resolve_model("old")
    clients = ModelPolicy.for_clients()
    assert clients.permits("mine") and clients.permits("theirs")
    assert {"mine", "theirs"} <= set(clients.names())
    with pytest.raises(Exception, match=NOT_AVAILABLE):
        clients.check(str(models_dir() / "mine.safetensors"))  # paths stay the operator's


def test_missing_configs_say_what_to_do_and_a_local_folder_provides_them(tiny_single_files, tiny_models):
    with pytest.raises(NotConfiguredError, match=r"run `bildwerk models configs sdxl` once with internet, or offline `bildwerk models configs sdxl --from FOLDER`") as err:
        load_model(str(tiny_single_files["sdxl"]), device="cpu")
    assert "SDXL" in str(err.value) and "\n" not in str(err.value)
    r = CliRunner().invoke(app, ["generate", "x", "--model", str(tiny_single_files["sd"]), "--steps", "2"])
    assert r.exit_code == 2
    assert "SD 1.x configs it needs are not on this machine" in " ".join(r.output.split())
    # A diffusers folder of that type on this machine is enough: its configs are copied, no weights.
    r = CliRunner().invoke(app, ["models", "configs", "sd1", "--from", str(tiny_models["sd"])])
    assert r.exit_code == 0, r.output
    m = load_model(str(tiny_single_files["sd"]), device="cpu")
    assert m.describe()["single_file"]["configs"] == "sd1"
    from bildwerk.models.single_file import configs_dir

    assert not list((configs_dir() / "sd1").rglob("*.safetensors"))


def test_models_configs_offline_is_one_clear_line():
    r = CliRunner().invoke(app, ["models", "configs", "sd1"])
    assert r.exit_code == 2
    assert "could not fetch the sd1 configs" in " ".join(r.output.split())


def test_bad_files_are_refused_at_resolve_in_one_line(tmp_path):
    pickled = tmp_path / "model.safetensors"
    pickled.write_bytes(pickle.dumps({"state_dict": {}}, protocol=2))
    with pytest.raises(UnsafeModelError, match="is a pickle file"):
        resolve_model(str(pickled))

    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320)}, str(lora))
    with pytest.raises(UnsupportedModelError, match=r"style.safetensors is a LoRA, not a model checkpoint"):
        resolve_model(str(lora))

    flux_like = tmp_path / "flux.safetensors"
    save_file({"model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(4)}, str(flux_like))
    with pytest.raises(UnsupportedModelError, match=r"architecture bildwerk does not drive \(flux"):
        resolve_model(str(flux_like))


def test_truncated_checkpoint_is_refused(tiny_single_files, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_single_files["sd"].read_bytes()[:-1000])
    with pytest.raises(UnsupportedModelError, match=r"cut.safetensors is truncated .*download or copy it again"):
        resolve_model(str(cut))
    r = CliRunner().invoke(app, ["generate", "x", "--model", str(cut)])
    assert r.exit_code == 2 and "truncated" in r.output
