"""tools/gpu/parts.py: a model folder out through 16 MiB files and back, intact or refused."""

from __future__ import annotations

import importlib.util
import lzma
import os
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("gpu_parts", Path(__file__).parents[2] / "tools" / "gpu" / "parts.py")
parts = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(parts)


def _model(root: Path) -> Path:
    (root / "unet").mkdir(parents=True)
    (root / "unet" / "config.json").write_text('{"a": 1}')
    (root / "unet" / "weights.safetensors").write_bytes(os.urandom(parts.PART + 12345))  # two parts
    (root / "bildwerk.json").write_text('{"name": "x"}')
    return root


def test_pack_cuts_large_files_and_unpack_restores_the_folder(tmp_path):
    model = _model(tmp_path / "model")
    written = parts.pack(model, tmp_path / "out")
    assert all(f.stat().st_size <= 16 * 2**20 for f in written) and len(written) <= 8
    assert sorted(f.name for f in written) == ["part-00.bin", "part-01.bin", "small.tar"]
    back = parts.unpack(tmp_path / "out", tmp_path / "back")
    for f in model.rglob("*"):
        if f.is_file():
            assert (back / f.relative_to(model)).read_bytes() == f.read_bytes()
    assert not (back / "parts.json").exists()


def test_a_damaged_part_is_refused(tmp_path):
    parts.pack(_model(tmp_path / "model"), tmp_path / "out")
    data = bytearray((tmp_path / "out" / "part-01.bin").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "out" / "part-01.bin").write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="checksum"):
        parts.unpack(tmp_path / "out", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_unxz_expands_once(tmp_path):
    packed = tmp_path / "d.safetensors.xz"
    with lzma.open(packed, "wb") as f:
        f.write(b"payload" * 1000)
    target = parts.unxz(packed)
    assert target.name == "d.safetensors" and target.read_bytes() == b"payload" * 1000
    assert parts.unxz(packed) == target


def test_a_left_out_folder_comes_from_a_local_model(tmp_path):
    model = _model(tmp_path / "model")
    (model / "vae").mkdir()
    (model / "vae" / "w.safetensors").write_bytes(b"trained on the GPU machine, never sent back")
    written = parts.pack(model, tmp_path / "out", exclude=("vae",))
    assert sum(f.stat().st_size for f in written) < parts.PART + 12345 + 20000  # the VAE did not travel
    with pytest.raises(SystemExit, match="--fill"):
        parts.unpack(tmp_path / "out", tmp_path / "back")
    assert not (tmp_path / "back").exists()
    local = tmp_path / "shipped"
    (local / "vae").mkdir(parents=True)
    (local / "vae" / "w.safetensors").write_bytes(b"the shipped VAE")
    back = parts.unpack(tmp_path / "out", tmp_path / "back", fill=local)
    assert (back / "vae" / "w.safetensors").read_bytes() == b"the shipped VAE"
    assert (back / "unet" / "weights.safetensors").read_bytes() == (model / "unet" / "weights.safetensors").read_bytes()


def test_two_models_of_the_shipped_size_fit_what_may_come_back(tmp_path):
    """8 files, 16 MiB each, 64 MiB together: one shipped-size model must take half at most."""
    from bildwerk.models.loader import EMBEDDED_DEFAULT

    written = parts.pack(EMBEDDED_DEFAULT, tmp_path / "out", exclude=("vae",))
    assert len(written) <= 4 and all(f.stat().st_size <= 16 * 2**20 for f in written)
    assert sum(f.stat().st_size for f in written) <= 32 * 2**20
    back = parts.unpack(tmp_path / "out", tmp_path / "back", fill=EMBEDDED_DEFAULT)
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert (back / weights).read_bytes() == (EMBEDDED_DEFAULT / weights).read_bytes()
