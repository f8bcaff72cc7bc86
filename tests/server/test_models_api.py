"""/api/v1/models and A1111's listing endpoints: every kind listed without server paths, one
entry shown, management only where the operator allowed it (--allow-model-admin)."""

from __future__ import annotations

import hashlib
import json
import shutil

from fastapi.testclient import TestClient
from harness.model_files import embedding, kohya_lora

from bildwerk.models.assets import add_source
from bildwerk.server.app import create_app
from bildwerk.server.settings import ServerSettings


def _client(tmp_path, **settings) -> TestClient:
    app = create_app(ServerSettings(store=tmp_path / "store", **settings), service=object())
    return TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)


def test_the_shared_server_lists_every_kind_and_refuses_management(server):
    with server.client() as c:
        listed = c.get("/api/v1/models").json()
        assert {"default", "local", "remote", "remote_modes", "remote_available", "loaded"} <= set(listed)
        assert set(listed["entries"]) == {"checkpoint", "lora", "embedding", "controlnet", "vae"}
        assert listed["entries"]["checkpoint"][0]["name"] == "default" and listed["admin"] is False
        assert c.get("/api/v1/models/default").json()["files"]
        for r in (c.delete("/api/v1/models/default"), c.put("/api/v1/default-model", json={"name": None}),
                  c.post("/api/v1/models", json={"hub_id": "org/name"}),
                  c.post("/api/v1/model-uploads", files={"file": ("x.safetensors", b"12345678{}")})):
            assert r.status_code == 403 and r.json()["error"]["code"] == "model_admin_off", r.text
            assert "--allow-model-admin" in r.json()["error"]["message"]
        assert c.post("/sdapi/v1/refresh-checkpoints").status_code == 200
        assert c.get("/sdapi/v1/embeddings").json() == {"loaded": {}, "skipped": {}}


def test_entries_from_a_registered_folder_are_listed_without_server_paths(tmp_path, tiny_models):
    webui = tmp_path / "webui"
    ckpt = webui / "models" / "Stable-diffusion"
    ckpt.mkdir(parents=True)
    kohya_lora(webui / "models" / "Lora" / "inkpen.safetensors")
    embedding(webui / "embeddings" / "badhands.safetensors", vectors=3)
    (webui / "models" / "VAE").mkdir(parents=True)
    kohya_lora(webui / "models" / "VAE" / "vae-ft.safetensors")  # any safetensors file in VAE/ lists as a VAE
    add_source(webui)
    c = _client(tmp_path)
    listed = c.get("/api/v1/models").json()
    [ink] = listed["entries"]["lora"]
    assert ink["name"] == "inkpen" and ink["source"] == "a1111" and ink["filename"] == "inkpen.safetensors"
    assert str(tmp_path) not in json.dumps(listed)  # no server path anywhere
    shown = c.get("/api/v1/models/inkpen", params={"kind": "lora"}).json()
    assert shown["kind"] == "lora" and shown["files"] == [{"path": "inkpen.safetensors", "bytes": ink["bytes"]}]
    missing = c.get("/api/v1/models/nope", params={"kind": "lora"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "asset_not_found"
    unknown = c.get("/api/v1/models/nope")  # may be a checkpoint: the policy's one refusal
    assert unknown.status_code == 404 and "GET /api/v1/models lists" in unknown.json()["error"]["message"]
    assert c.get("/api/v1/models/" + "x" * 300).status_code == 400

    # A1111's own shapes
    [lora] = c.get("/sdapi/v1/loras").json()
    assert lora == {"name": "inkpen", "alias": "inkpen", "path": "inkpen.safetensors",
                    "metadata": {"ss_network_dim": "4"}}
    emb = c.get("/sdapi/v1/embeddings").json()
    assert emb["loaded"]["badhands"]["vectors"] == 3 and emb["loaded"]["badhands"]["shape"] == 768
    assert emb["skipped"] == {}
    assert c.get("/sdapi/v1/sd-vae").json() == [{"model_name": "vae-ft", "filename": "vae-ft.safetensors"}]
    assert c.post("/sdapi/v1/refresh-loras").status_code == 200


def test_a1111_titles_carry_the_short_hash_clients_send_back(tmp_path, tiny_models):
    from bildwerk.server.routes_a1111_models import checkpoint_from_title

    models = tmp_path / "bildwerk-home" / "models"  # the test's BILDWERK_HOME (conftest)
    models.mkdir(parents=True)
    f = kohya_lora(models / "single.safetensors")  # a file in the models folder lists as a checkpoint
    c = _client(tmp_path, allow_any_model=True)
    rows = {r["model_name"]: r for r in c.get("/sdapi/v1/sd-models").json()}
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    assert rows["single"]["title"] == f"single [{sha[:10]}]" and rows["single"]["sha256"] == sha
    assert rows["single"]["filename"] == "single.safetensors" and rows["default"]["title"] == "default"
    assert checkpoint_from_title(rows["single"]["title"]) == "single"
    c.app.state.bildwerk.a1111_model = "single"  # as POST /sdapi/v1/options with its title sets it
    assert c.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == rows["single"]["title"]
    assert checkpoint_from_title("my model [abc]") == "my model [abc]"  # not a hash: a name as it is


def test_management_where_the_operator_allowed_it(tmp_path, tiny_models, monkeypatch):
    c = _client(tmp_path, allow_model_admin=True)
    assert c.get("/api/v1/models").json()["admin"] is True
    lora = kohya_lora(tmp_path / "Ink.safetensors")
    up = c.post("/api/v1/model-uploads", files={"file": ("../../etc/Ink.safetensors", lora.read_bytes())},
                data={"kind": "lora"})
    assert up.status_code == 200, up.text
    assert up.json() == {"kind": "lora", "name": "Ink", "default": False}
    home = tmp_path / "bildwerk-home"
    assert (home / "loras" / "Ink.safetensors").read_bytes() == lora.read_bytes()  # in its folder, whatever the name
    again = c.post("/api/v1/model-uploads", files={"file": ("Ink.safetensors", lora.read_bytes())},
                   data={"kind": "lora"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "model_exists"
    bad = c.post("/api/v1/model-uploads", files={"file": ("x.safetensors", b"\x80\x04pickle")}, data={"kind": "lora"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unsafe_model"
    assert str(tmp_path) not in bad.text
    assert not [p for p in home.iterdir() if p.name.startswith(".upload-")]  # uploads cleaned up

    shutil.copytree(tiny_models["sd"], tmp_path / "org" / "here")  # a folder the server's cwd sees as org/here
    monkeypatch.chdir(tmp_path)
    hub = c.post("/api/v1/models", json={"hub_id": "org/here"})  # a hub id only: never read from disk
    assert hub.status_code == 404 and "HF_HUB_OFFLINE" in hub.json()["error"]["message"]
    assert not (home / "models" / "here").exists()
    assert c.post("/api/v1/models", json={"hub_id": "/etc/passwd"}).status_code == 400  # an id, never a path

    from bildwerk.models.install import install

    install(tiny_models["sd"], "tinysd")
    r = c.put("/api/v1/default-model", json={"name": "tinysd"})
    assert r.json() == {"default": "tinysd", "effective": "tinysd"}
    assert c.put("/api/v1/default-model", json={"name": "../x"}).status_code == 404
    removed = c.delete("/api/v1/models/tinysd")
    assert removed.json() == {"kind": "checkpoint", "name": "tinysd", "was_default": True}
    assert c.put("/api/v1/default-model", json={"name": None}).json()["default"] == "default"
    assert c.delete("/api/v1/models/Ink", params={"kind": "lora"}).status_code == 200
    assert not (home / "loras" / "Ink.safetensors").exists()
    assert c.delete("/api/v1/models/default").status_code == 400  # the embedded model stays


def test_a_sources_files_cannot_be_removed_over_rest(tmp_path):
    webui = tmp_path / "webui"
    (webui / "models" / "Stable-diffusion").mkdir(parents=True)
    f = kohya_lora(webui / "models" / "Lora" / "inkpen.safetensors")
    add_source(webui)
    r = _client(tmp_path, allow_model_admin=True).delete("/api/v1/models/inkpen")
    assert r.status_code == 400 and "never deletes" in r.json()["error"]["message"] and f.is_file()
    assert str(tmp_path) not in r.text
