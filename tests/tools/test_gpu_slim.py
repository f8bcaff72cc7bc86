"""tools/gpu/slim.py: the shipped UNet leaves the tracked tree for a device call and comes back."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("gpu_slim", Path(__file__).parents[2] / "tools" / "gpu" / "slim.py")
slim = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(slim)


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    weights = root / slim.LEAVE_OUT[0]
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"\x00weights" * 1000)
    (weights.parent / "config.json").write_text("{}")
    (root / "README.md").write_text("hello\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return root


def test_on_leaves_the_weights_out_and_off_brings_them_back(repo):
    weights = repo / slim.LEAVE_OUT[0]
    before = weights.read_bytes()
    (repo / "notes.txt").write_text("untracked work stays")
    assert slim.on(repo) == "main"
    tracked = _git(repo, "ls-files").split()
    assert slim.LEAVE_OUT[0] not in tracked and not weights.exists()
    assert "README.md" in tracked and (weights.parent / "config.json").exists()
    with pytest.raises(SystemExit, match="already"):
        slim.on(repo)
    assert slim.off(repo) == "main"
    assert weights.read_bytes() == before and slim.LEAVE_OUT[0] in _git(repo, "ls-files").split()
    assert slim.BRANCH not in _git(repo, "branch")
    assert (repo / "notes.txt").read_text() == "untracked work stays"


def test_on_refuses_uncommitted_changes_and_off_refuses_when_not_slim(repo):
    (repo / "README.md").write_text("changed\n")
    with pytest.raises(SystemExit, match="commit or stash"):
        slim.on(repo)
    assert _git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    with pytest.raises(SystemExit, match="not slim"):
        slim.off(repo)
