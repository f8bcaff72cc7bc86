"""ControlNet in the local engine: tiny random ControlNets (folder and single file) change the
picture, scale 0 is exactly no ControlNet, the step window matters, every mode takes them, a
seed's picture is the same alone or batched, and bad ControlNets are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bildwerk.app.batching import ContinuousBatcher
from bildwerk.app.generate import Generator
from bildwerk.core.errors import InvalidRequestError, UnsafeModelError, UnsupportedModelError
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.spec import JobSpec
from bildwerk.models.assets import AssetNotFoundError

OFF = PromptOptions(wildcards=False, translate="off")


@pytest.fixture(autouse=True)
def _controlnets_at_home(tiny_controlnets, tmp_path):
    home = tmp_path / "bildwerk-home" / "controlnet"
    home.mkdir(parents=True)
    for name, path in tiny_controlnets.items():
        (home / name).symlink_to(path)


@pytest.fixture(scope="module")
def generator(engine):
    return Generator(models=engine.models)


def _edges_picture(size: int = 64) -> Image.Image:
    im = Image.new("RGB", (size, size), (240, 240, 240))
    d = ImageDraw.Draw(im)
    d.rectangle((8, 8, 40, 40), fill=(10, 10, 10))
    d.ellipse((30, 30, 60, 60), fill=(120, 20, 20))
    return im


def _unit(model: str = "cn-sd", **kw):
    return {"model": model, "image": _edges_picture(), "preprocessor": "canny", **kw}


def _run(generator, model_path, *, controls=(), mode="text-to-image", **kw):
    spec = JobSpec.build(model=str(model_path), options=OFF, prompt="a house", seed=7, steps=3,
                         width=64, height=64, mode=mode, controls=list(controls) or None, **kw)
    return generator.run(spec)


def _px(result) -> np.ndarray:
    return np.stack([np.asarray(im) for im in result.images])


def test_controlnet_changes_the_picture_scale_zero_is_none_and_the_window_matters(generator, tiny_models):
    sd = tiny_models["sd"]
    plain = _px(_run(generator, sd))
    steered = _run(generator, sd, controls=[_unit()])
    assert not np.array_equal(_px(steered), plain)
    assert np.array_equal(_px(_run(generator, sd, controls=[_unit(scale=0.0)])), plain)
    late = _px(_run(generator, sd, controls=[_unit(start=0.5)]))
    assert not np.array_equal(late, plain) and not np.array_equal(late, _px(steered))
    # The record names the network, its preprocessor, scale, window and the control picture.
    rec = steered.record(0)
    unit = rec["request"]["controls"][0]
    assert unit["model"] == "cn-sd" and unit["preprocessor"] == "canny" and unit["scale"] == 1.0
    assert (unit["start"], unit["end"]) == (0.0, 1.0) and len(unit["image_sha256"]) == 64
    assert any(n.startswith("ControlNet cn-sd: canny") for n in rec["notes"])


@pytest.mark.extended  # make test keeps the core ControlNet checks; these add ~10 s each
def test_single_files_in_both_layouts_load_offline_like_their_folder(generator, tiny_models):
    for model, folder_name, files in ((tiny_models["sd"], "cn-sd", ("cn-sd-file", "cn-sd-original")),
                                      (tiny_models["sdxl"], "cn-sdxl", ("cn-sdxl-original",))):
        folder = _px(_run(generator, model, controls=[_unit(folder_name)])).astype(int)
        singles = [_px(_run(generator, model, controls=[_unit(name)])).astype(int) for name in files]
        # The same weights under diffusers' names and the original ones: the same picture; and
        # the folder's (diffusers' folder loader keeps its tensors otherwise: rounding apart).
        assert all(np.array_equal(a, singles[0]) for a in singles)
        assert np.abs(singles[0] - folder).mean() < 1.0
        assert not np.array_equal(singles[0], _px(_run(generator, model)))


@pytest.mark.extended  # make test keeps the core ControlNet checks; these add ~10 s each
def test_image_to_image_and_inpaint_take_controlnets(generator, tiny_models):
    pic = _edges_picture()
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 48, 48), fill=255)
    for model, mode, extra in ((tiny_models["sd"], "image-to-image", {"image": pic}),
                               (tiny_models["sd-inpaint"], "inpaint", {"image": pic, "mask": mask}),
                               (tiny_models["sd"], "inpaint", {"image": pic, "mask": mask, "only_masked": False})):
        plain = _px(_run(generator, model, mode=mode, **extra))
        steered = _px(_run(generator, model, mode=mode, controls=[_unit(preprocessor="scribble")], **extra))
        assert not np.array_equal(steered, plain), mode


@pytest.mark.extended  # make test keeps the core ControlNet checks; these add ~10 s each
def test_sdxl_controlnet_and_two_units(generator, tiny_models):
    xl = tiny_models["sdxl"]
    plain = _px(_run(generator, xl))
    one = _px(_run(generator, xl, controls=[_unit("cn-sdxl")]))
    two = _px(_run(generator, xl, controls=[_unit("cn-sdxl"), _unit("cn-sdxl", preprocessor="lineart", scale=0.5)]))
    assert not np.array_equal(one, plain) and not np.array_equal(two, one)


def test_a_seed_is_the_same_alone_or_batched(generator, tiny_models):
    sd = str(tiny_models["sd"])
    specs = [JobSpec.build(model=sd, options=OFF, prompt=p, seed=s, steps=3, width=64, height=64,
                           controls=[_unit(scale=sc)])
             for p, s, sc in (("a house", 1, 1.0), ("a tree", 2, 0.4), ("a lake", 3, 1.5))]
    alone = [_px(generator.run(s)) for s in specs]
    batcher = ContinuousBatcher(max_rows=64)
    for i, spec in enumerate(specs):
        batcher.add(str(i), generator.start(spec))
    out = {}
    while len(batcher):
        for o in batcher.step():
            assert o.error is None, o.error
            out[int(o.key)] = _px(o.result)
    assert batcher.last_rows == 6  # all three shared the last UNet call (two rows each)
    for i, pic in enumerate(alone):
        assert np.array_equal(out[i], pic), i


def test_bad_controlnets_are_clear_errors(generator, tiny_models, tmp_path):
    sd = str(tiny_models["sd"])
    with pytest.raises(AssetNotFoundError, match="no ControlNet named 'nope'"):
        generator.check(JobSpec.build(model=sd, options=OFF, prompt="x", controls=[_unit("nope")]))
    for name in ("cn-sdxl", "cn-sdxl-original"):
        with pytest.raises(UnsupportedModelError, match=f"ControlNet '{name}' is for SDXL"):
            generator.check(JobSpec.build(model=sd, options=OFF, prompt="x", controls=[_unit(name)]))
    folder = tmp_path / "bildwerk-home" / "controlnet"
    (folder / "pickled.safetensors").write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    with pytest.raises(UnsafeModelError, match="safetensors only"):
        generator.check(JobSpec.build(model=sd, options=OFF, prompt="x", controls=[_unit("pickled")]))
    whole = (folder / "cn-sd-file.safetensors").read_bytes()
    (folder / "cut.safetensors").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UnsupportedModelError, match="cut.safetensors is truncated"):
        generator.check(JobSpec.build(model=sd, options=OFF, prompt="x", controls=[_unit("cut")]))
    with pytest.raises(InvalidRequestError, match="needs a control image"):
        JobSpec.build(model=sd, prompt="x", controls=[{"model": "cn-sd"}])
    with pytest.raises(InvalidRequestError, match="start"):
        JobSpec.build(model=sd, prompt="x", controls=[_unit(start=0.8, end=0.2)])
    with pytest.raises(InvalidRequestError, match="ControlNet needs a local model"):
        generator.check(JobSpec.build(model="openai:gpt-image-1", prompt="x", controls=[_unit()]))


def test_a_file_of_another_kind_is_no_controlnet(generator, tiny_models, tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "bildwerk-home" / "controlnet"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4)},
              str(folder / "a-lora.safetensors"))
    with pytest.raises(UnsupportedModelError, match="a-lora.safetensors is a lora, not a ControlNet"):
        generator.check(JobSpec.build(model=str(tiny_models["sd"]), options=OFF, prompt="x",
                                      controls=[_unit("a-lora")]))
