"""The manager with single-file checkpoints (models/single_file.py): installed by kind into the
models folder, listed with what the header says, chosen as the default, named by A1111 title."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bildwerk.cli import app
from bildwerk.models.catalog import find_entries
from bildwerk.models.loader import resolve_model
from bildwerk.server.app import create_app
from bildwerk.server.settings import ServerSettings


def test_a_single_file_checkpoint_is_installed_listed_and_made_the_default(tiny_single_files, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["models", "add", str(tiny_single_files["sd"]), "--name", "single", "--default"])
    assert r.exit_code == 0, r.output
    [entry] = find_entries("single", "checkpoint")
    assert entry.path.name == "single.safetensors" and entry.path.parent.name == "models"
    assert entry.family == "sd1" and entry.default and entry.modes[0] == "text-to-image"
    assert resolve_model(None).path == entry.path.resolve()  # the default, as the loader resolves it
    c = TestClient(create_app(ServerSettings(store=tmp_path / "store"), service=object()),
                   base_url="http://127.0.0.1")
    rows = {row["model_name"]: row for row in c.get("/sdapi/v1/sd-models").json()}
    sha = hashlib.sha256(entry.path.read_bytes()).hexdigest()
    assert rows["single"]["title"] == f"single [{sha[:10]}]"  # a client may name it: listed for clients
    assert [e["name"] for e in c.get("/api/v1/models").json()["entries"]["checkpoint"]] == ["default", "single"]
