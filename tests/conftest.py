"""Shared fixtures: an isolated bildwerk home, offline hub, and tiny models on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# One torch thread (see _one_torch_thread); servers started by tests inherit it.
os.environ.setdefault("BILDWERK_THREADS", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    # No test reads or writes the user's real bildwerk folder or default model choice.
    monkeypatch.setenv("BILDWERK_HOME", str(tmp_path / "bildwerk-home"))
    monkeypatch.delenv("BILDWERK_MODEL", raising=False)
    monkeypatch.setenv("BILDWERK_DEVICE", "cpu")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny SD, SD-inpaint (9-channel) and SDXL folders, saved as real diffusers folders."""
    from bildwerk.models.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: save_tiny_model(root / kind, kind) for kind in ("sd", "sd-inpaint", "sdxl")}


@pytest.fixture(scope="session")
def tiny_controlnets(tmp_path_factory) -> dict[str, Path]:
    """Tiny random ControlNets for the tiny SD and SDXL models: diffusers folders and single files
    in diffusers' and in the original (A1111) layout."""
    from bildwerk.models.tiny_controlnet import save_tiny_controlnet

    root = tmp_path_factory.mktemp("tiny-controlnets")
    return {
        "cn-sd": save_tiny_controlnet(root / "cn-sd", "sd"),
        "cn-sd-file.safetensors": save_tiny_controlnet(root / "cn-sd-file.safetensors", "sd", layout="file"),
        "cn-sd-original.safetensors": save_tiny_controlnet(root / "cn-sd-original.safetensors", "sd",
                                                           layout="original"),
        "cn-sdxl": save_tiny_controlnet(root / "cn-sdxl", "sdxl"),
        "cn-sdxl-original.safetensors": save_tiny_controlnet(root / "cn-sdxl-original.safetensors", "sdxl",
                                                             layout="original"),
    }


@pytest.fixture(scope="session")
def tiny_single_files(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints in the original single-file layout (sd, sd-inpaint, sd2-v, sdxl,
    sdxl-inpaint); the configs they need lie in ``<their folder>/configs/<type>`` (see
    ``single_file_configs``)."""
    from bildwerk.models.tiny_single_file import CONFIG_TYPES, write_tiny_single_file

    root = tmp_path_factory.mktemp("tiny-single-files")
    return {kind: write_tiny_single_file(root / f"tiny-{kind}.safetensors", kind, configs=root / "configs" / config)
            for kind, config in CONFIG_TYPES.items()}


@pytest.fixture
def single_file_configs(tiny_single_files) -> Path:
    """The tiny single files' configs made this test's ``$BILDWERK_HOME/configs``."""
    home = Path(os.environ["BILDWERK_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "configs").symlink_to(next(iter(tiny_single_files.values())).parent / "configs")
    return home / "configs"


@pytest.fixture(scope="session")
def engine():
    from bildwerk.engines.diffusers_engine import DiffusersEngine
    from bildwerk.models.loader import ModelManager

    return DiffusersEngine(ModelManager(device="cpu"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    # Tiny models gain nothing from several threads, and on a busy machine OpenMP threads
    # spin-wait for each other (tens of times slower); one thread keeps the suite steady.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
