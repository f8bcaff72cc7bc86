"""Assets by name: bildwerk's folders first, then registered A1111/ComfyUI folders, in place."""

from __future__ import annotations

import json

import pytest

from bildwerk.models import assets
from bildwerk.models.assets import (
    AssetNotFoundError,
    add_source,
    find_asset,
    list_assets,
    remove_source,
)


def _safetensors(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = b'{"__metadata__":{"a":"b"}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BILDWERK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_a1111_and_comfyui_folders_are_read_in_place_with_bildwerk_first(home, tmp_path):
    webui = tmp_path / "webui"
    _safetensors(webui / "models" / "Lora" / "styles" / "inkpen.safetensors")
    _safetensors(webui / "models" / "Lora" / "shared.safetensors")
    (webui / "models" / "Stable-diffusion").mkdir(parents=True)
    (webui / "models" / "Lora" / "old.pt").write_bytes(b"\x80\x04junk")
    comfy = tmp_path / "comfy"
    _safetensors(comfy / "models" / "loras" / "watercolor.safetensors")
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    own = _safetensors(home / "loras" / "shared.safetensors")

    assert add_source(webui).layout == "a1111"
    assert add_source(comfy).layout == "comfyui"
    add_source(webui)  # registering twice keeps one entry
    assert len(json.loads((home / "sources.json").read_text())) == 2

    names = {a.name: a for a in list_assets("lora")}
    assert sorted(names) == ["inkpen", "shared", "watercolor"]  # the pickle is not an asset
    assert names["shared"].path == own and names["shared"].source == "bildwerk"
    assert find_asset("lora", "InkPen.safetensors").path.name == "inkpen.safetensors"
    with pytest.raises(AssetNotFoundError, match="pickle"):
        find_asset("lora", "old")
    with pytest.raises(AssetNotFoundError, match="no LoRA named 'nope'"):
        find_asset("lora", "nope")

    assert remove_source(comfy) and not remove_source(comfy)
    assert [a.name for a in list_assets("lora")] == ["inkpen", "shared"]
    assert (comfy / "models" / "loras" / "watercolor.safetensors").is_file()  # never touched


def test_a_folder_of_no_known_layout_is_refused(home, tmp_path):
    with pytest.raises(Exception, match="neither an AUTOMATIC1111"):
        add_source(tmp_path)
    assert assets.sources() == []


def test_the_policy_permits_a_listing_as_it_permits_each_name(home, tmp_path):
    from bildwerk.models.policy import ModelPolicy

    _safetensors(home / "models" / "mine.safetensors")
    refs = ["default", "mine", "reg/x", "nope", "../mine", "openai:dall-e-2", "~mine"]
    for policy in (ModelPolicy.for_clients(["reg/x"]), ModelPolicy.operator()):
        assert policy.permitted(refs) == {r for r in refs if policy.permits(r)}
    assert ModelPolicy.for_clients(["reg/x"]).permitted(refs) == {"default", "mine", "reg/x", "openai:dall-e-2"}
