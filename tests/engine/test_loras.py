"""LoRAs and textual-inversion embeddings at inference, on the tiny models, offline.

Each file is written here in a real layout (kohya/A1111, diffusers/peft as `bildwerk train`
saves it, A1111 embeddings), found by name in $BILDWERK_HOME, and must change the picture; a
plain request after a LoRA request gives exactly the plain picture; a bad file is a clear error.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bildwerk.app.generate import Generator
from bildwerk.core.errors import UnsafeModelError, UnsupportedModelError
from bildwerk.core.paths import bildwerk_home
from bildwerk.core.prompt import PromptOptions
from bildwerk.core.request import build_request
from bildwerk.core.spec import JobSpec
from bildwerk.engines.diffusers_engine import DiffusersEngine
from bildwerk.models.assets import AssetNotFoundError
from bildwerk.models.loader import ModelManager

OFF = PromptOptions(wildcards=False, translate="off")
BASE = dict(seed=1, steps=2, width=64, height=64)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One of each file, written once: LoRAs for SD and SDXL (kohya), a LoRA saved the way
    `bildwerk train --method lora` saves it, an embedding, and broken files."""
    from bildwerk.models.tiny import build_tiny_pipeline
    from bildwerk.models.tiny_lora import save_peft_lora, save_tiny_embedding, save_tiny_lora

    root = tmp_path_factory.mktemp("lora-files")
    sd, xl = build_tiny_pipeline("sd"), build_tiny_pipeline("sdxl")
    out = {
        "kohya": save_tiny_lora(root / "kohya.safetensors", sd),
        "other": save_tiny_lora(root / "other.safetensors", sd, seed=7),
        "xl": save_tiny_lora(root / "xl.safetensors", xl),
        "trained": save_peft_lora(root / "run" / "lora", build_tiny_pipeline("sd")),
        "MyEmb": save_tiny_embedding(root / "MyEmb.safetensors", sd, vectors=2),
    }
    (root / "pickled.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle, renamed
    out["pickled"] = root / "pickled.safetensors"
    data = out["kohya"].read_bytes()
    (root / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    out["truncated"] = root / "truncated.safetensors"
    return out


@pytest.fixture
def home(files) -> Path:
    """$BILDWERK_HOME (isolated per test) with the LoRAs in loras/ and the embedding in embeddings/."""
    h = bildwerk_home()
    (h / "loras").mkdir(parents=True)
    (h / "embeddings").mkdir(parents=True)
    for name in ("kohya", "other", "xl", "pickled", "truncated"):
        shutil.copy(files[name], h / "loras" / f"{name}.safetensors")
    shutil.copy(files["trained"], h / "loras" / "trained.safetensors")
    shutil.copy(files["MyEmb"], h / "embeddings" / "MyEmb.safetensors")
    shutil.copy(files["MyEmb"], h / "loras" / "notlora.safetensors")  # an embedding in the wrong folder
    return h


@pytest.fixture(scope="module")
def sd_engine():
    return DiffusersEngine(ModelManager(device="cpu"))


@pytest.fixture(scope="module")
def xl_engine():
    return DiffusersEngine(ModelManager(device="cpu"))


def _gen(engine, model, **kw):
    r = engine.generate(build_request(model=str(model), **{**BASE, "prompt": "a red cat", **kw}))
    return np.asarray(r.images[0]), r


def test_kohya_lora_changes_the_picture_and_a_plain_request_after_it_is_exact(home, sd_engine, tiny_models):
    sd = tiny_models["sd"]
    plain, _ = _gen(sd_engine, sd)
    with_lora, r = _gen(sd_engine, sd, loras=[{"name": "kohya", "weight": 1.0}])
    assert not np.array_equal(plain, with_lora)
    assert r.record()["loras"][0]["name"] == "kohya" and len(r.loras[0]["hash"]) == 12
    info = r.parameters_text(0)
    assert "<lora:kohya:1>" in info and f'Lora hashes: "kohya: {r.loras[0]["hash"]}"' in info
    half, _ = _gen(sd_engine, sd, loras=[{"name": "kohya", "weight": 0.5}])
    both, _ = _gen(sd_engine, sd, loras=[{"name": "kohya", "weight": 0.5}, {"name": "other", "weight": 0.8}])
    assert len({a.tobytes() for a in (with_lora, half, both)}) == 3  # weights and sets matter
    after, r2 = _gen(sd_engine, sd)
    assert np.array_equal(plain, after) and "loras" not in r2.record()  # nothing leaked


def test_prompt_tags_through_the_use_case_and_the_field_wins(home, sd_engine, tiny_models):
    gen = Generator(models=sd_engine.models)
    model = str(tiny_models["sd"])
    by_field = gen.run(JobSpec.build(model=model, prompt="a red cat", loras=[{"name": "kohya", "weight": 0.5}],
                                     options=OFF, **BASE))
    by_tag = gen.run(JobSpec.build(model=model, prompt="a red cat <lora:kohya:0.5>", options=OFF, **BASE))
    assert np.array_equal(np.asarray(by_field.images[0]), np.asarray(by_tag.images[0]))
    rec = by_tag.request.prompt_record
    assert rec.step("loras").output == "a red cat" and by_tag.request.prompt == "a red cat"
    assert [(x.name, x.weight) for x in by_tag.request.loras] == [("kohya", 0.5)]
    both = gen.run(JobSpec.build(model=model, prompt="a red cat <lora:kohya:2>",
                                 loras=[{"name": "kohya", "weight": 0.5}], options=OFF, **BASE))
    assert np.array_equal(np.asarray(both.images[0]), np.asarray(by_field.images[0]))
    assert any("replaces" in w for w in both.request.prompt_record.warnings)


def test_a_style_may_name_a_lora(home, sd_engine, tiny_models):
    import json

    (home / "styles").mkdir()
    (home / "styles" / "mine.json").write_text(json.dumps(
        [{"name": "kohya-look", "prompt": "{prompt}, painted <lora:kohya:0.5>"}]), "utf-8")
    gen = Generator(models=sd_engine.models)
    spec = JobSpec.build(model=str(tiny_models["sd"]), prompt="a red cat",
                         options=OFF.model_copy(update={"style": "kohya-look"}), **BASE)
    r = gen.run(spec)
    assert r.request.prompt == "a red cat, painted" and [x.name for x in r.request.loras] == ["kohya"]
    assert r.loras[0]["weight"] == 0.5


def test_batched_lora_requests_equal_alone_and_other_sets_never_share_a_call(home, sd_engine, tiny_models):
    sd = str(tiny_models["sd"])
    a = build_request(model=sd, prompt="a red cat", loras=[{"name": "kohya"}], **BASE)
    b = build_request(model=sd, prompt="a blue dog", loras=[{"name": "kohya"}], **{**BASE, "seed": 2})
    plain = build_request(model=sd, prompt="a red cat", **BASE)
    alone = [np.asarray(sd_engine.generate(r).images[0]) for r in (a, b)]
    ja, jb, jp = (sd_engine.prepare(r) for r in (a, b, plain))
    assert ja.batch_key == jb.batch_key != jp.batch_key
    while not ja.done:
        sd_engine.step([ja, jb])
    together = [np.asarray(sd_engine.finish(j).images[0]) for j in (ja, jb)]
    assert all(np.array_equal(x, y) for x, y in zip(alone, together, strict=True))
    while not jp.done:  # prepared while LoRA jobs ran: its calls run without them
        sd_engine.step([jp])
    assert np.array_equal(np.asarray(sd_engine.finish(jp).images[0]), _gen(sd_engine, sd)[0])


def test_a_job_whose_lora_was_evicted_in_flight_loads_it_again(home, sd_engine, tiny_models, monkeypatch):
    from bildwerk.engines import adapters

    sd = str(tiny_models["sd"])
    a = build_request(model=sd, prompt="a red cat", loras=[{"name": "kohya"}], **BASE)
    alone = np.asarray(sd_engine.generate(a).images[0])
    monkeypatch.setattr(adapters, "MAX_CACHED", 1)
    ja = sd_engine.prepare(a)
    jb = sd_engine.prepare(build_request(model=sd, prompt="x", loras=[{"name": "trained"}], **BASE))  # evicts kohya
    assert ja.adapters[0][0] not in adapters._present(ja.model.pipe)
    while not ja.done:
        sd_engine.step([ja])
    assert np.array_equal(np.asarray(sd_engine.finish(ja).images[0]), alone)
    while not jb.done:
        sd_engine.step([jb])


@pytest.mark.extended  # test time: make test keeps the cheaper cases of this feature
def test_sdxl_kohya_lora_with_sgm_names(home, xl_engine, tiny_models):
    xl = tiny_models["sdxl"]
    plain, _ = _gen(xl_engine, xl)
    with_lora, r = _gen(xl_engine, xl, prompt="a red cat <lora:xl:0.8>")
    assert not np.array_equal(plain, with_lora) and r.loras[0]["family"] == "sdxl"
    assert np.array_equal(plain, _gen(xl_engine, xl)[0])


def test_the_lora_bildwerk_train_writes_loads_by_name(home, sd_engine, tiny_models):
    sd = tiny_models["sd"]
    plain, _ = _gen(sd_engine, sd)
    trained, r = _gen(sd_engine, sd, loras=[{"name": "trained"}])
    assert not np.array_equal(plain, trained) and r.loras[0]["text_encoder"] is False


@pytest.mark.parametrize(("name", "error", "words"), [
    ("xl", UnsupportedModelError, "is for SDXL, the model is"),
    ("pickled", UnsafeModelError, "LoRA 'pickled': pickled.safetensors is a pickle file"),
    ("truncated", UnsupportedModelError, "LoRA 'truncated': truncated.safetensors is truncated"),
    ("nosuch", AssetNotFoundError, "no LoRA named 'nosuch'"),
    ("notlora", UnsupportedModelError, "has no LoRA weights: it looks like an embedding"),
])
def test_bad_loras_give_one_clear_error(home, sd_engine, tiny_models, name, error, words):
    with pytest.raises(error, match=words):
        _gen(sd_engine, tiny_models["sd"], loras=[{"name": name}])
    if name == "xl":  # a misfit leaves no half-loaded adapter behind: the next request runs
        assert _gen(sd_engine, tiny_models["sd"], loras=[{"name": "kohya"}])[0].shape == (64, 64, 3)


def test_a_sd_lora_on_sdxl_is_refused(home, xl_engine, tiny_models):
    with pytest.raises(UnsupportedModelError, match="LoRA 'kohya' is for"):
        _gen(xl_engine, tiny_models["sdxl"], loras=[{"name": "kohya"}])


def test_unknown_lora_fails_at_submission(home, sd_engine, tiny_models):
    gen = Generator(models=sd_engine.models)
    with pytest.raises(AssetNotFoundError):
        gen.check(JobSpec.build(model=str(tiny_models["sd"]), prompt="x <lora:nosuch:1>", options=OFF))


@pytest.mark.extended  # test time: make test keeps the cheaper cases of this feature
def test_embedding_by_name_changes_the_picture(home, sd_engine, tiny_models):
    sd = str(tiny_models["sd"])
    gen = Generator(models=sd_engine.models)
    plain = gen.run(JobSpec.build(model=sd, prompt="a red cat", options=OFF, **BASE))
    used = gen.run(JobSpec.build(model=sd, prompt="a red cat, myemb", options=OFF, **BASE))
    comfy = gen.run(JobSpec.build(model=sd, prompt="a red cat, embedding:MyEmb", options=OFF, **BASE))
    weighted = gen.run(JobSpec.build(model=sd, prompt="a red cat, (MyEmb:1.1)", options=OFF, **BASE))  # compel
    pics = [np.asarray(r.images[0]) for r in (plain, used, comfy, weighted)]
    assert not np.array_equal(pics[0], pics[1]) and np.array_equal(pics[1], pics[2])
    assert not np.array_equal(pics[1], pics[3]) and not np.array_equal(pics[0], pics[3])
    assert used.embeddings == [{"name": "MyEmb", "hash": used.embeddings[0]["hash"], "vectors": 2}]
    assert "TI hashes" in used.parameters_text(0)
    assert comfy.request.prompt == "a red cat, MyEmb" and comfy.request.prompt_record.embeddings == ["MyEmb"]
    again = sd_engine.generate(plain.request)  # the added tokens change no other prompt
    assert np.array_equal(np.asarray(plain.images[0]), np.asarray(again.images[0]))


def test_new_lora_layers_are_batch_invariant_too(home, sd_engine, tiny_models):
    import torch

    from bildwerk.engines.invariance import _MARK

    _gen(sd_engine, tiny_models["sd"], loras=[{"name": "kohya"}])
    unet = sd_engine.models.current.unet
    lora_layers = [m for n, m in unet.named_modules() if ".lora_A." in n or ".lora_B." in n]
    assert lora_layers and all(getattr(m, _MARK, False) for m in lora_layers
                               if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))


@pytest.mark.extended  # loads the shipped default model into an engine of its own (~15 s)
def test_default_model_takes_the_unet_part_and_refuses_embeddings(home, files):
    """bildwerk's default model has a sentence encoder, no CLIP: a LoRA's text-encoder part is left
    out (said so in the notes); an embedding named explicitly is a clear error."""
    from safetensors.torch import save_file

    from bildwerk.models.tiny import build_tiny_pipeline
    from bildwerk.models.tiny_lora import tiny_lora_state

    engine = DiffusersEngine(ModelManager(device="cpu"))
    model = engine.models.get(None)
    unet_part = tiny_lora_state(model.pipe, text_encoder=False)
    te_part = {k: v for k, v in tiny_lora_state(build_tiny_pipeline("sd")).items() if k.startswith("lora_te_")}
    save_file({**unet_part, **te_part}, str(home / "loras" / "mixed.safetensors"))
    base = dict(seed=3, steps=2, prompt="ein See")
    plain = np.asarray(engine.generate(build_request(**base)).images[0])
    r = engine.generate(build_request(**base, loras=[{"name": "mixed"}]))
    assert not np.array_equal(plain, np.asarray(r.images[0]))
    assert any("text-encoder part was left out" in n for n in r.notes)
    assert np.array_equal(plain, np.asarray(engine.generate(build_request(**base)).images[0]))
    gen = Generator(models=engine.models)
    with pytest.raises(UnsupportedModelError, match="cannot use textual-inversion embeddings"):
        gen.run(JobSpec.build(prompt="ein See, embedding:MyEmb", options=OFF, seed=1, steps=1))
