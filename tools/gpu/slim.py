"""Leave the shipped UNet out of what a GPU call carries, and put it back afterwards.

A device call carries the tracked tree plus the carried files, 64 MiB in all. The shipped UNet
alone is 35 MB of the tree, and training on the GPU machine never reads it (only the VAE). So:

    .venv/bin/python tools/gpu/slim.py on    # a local branch gpu-slim without the UNet weights
    ... the device calls (tools/gpu/README.md) ...
    .venv/bin/python tools/gpu/slim.py off   # back to the branch you were on; gpu-slim deleted

``on`` refuses uncommitted changes to tracked files (they would travel with the branch switch
and could be lost); ``off`` restores the files by switching back. Nothing is pushed anywhere.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BRANCH = "gpu-slim"
LEAVE_OUT = ("src/bildwerk/data/models/default/unet/diffusion_pytorch_model.safetensors",)


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _marker(root: Path) -> Path:
    return Path(_git(root, "rev-parse", "--absolute-git-dir").strip()) / "gpu-slim-from"


def on(root: Path = ROOT) -> str:
    """Switch to a branch whose tree lacks LEAVE_OUT; returns the branch left."""
    if _git(root, "status", "--porcelain", "--untracked-files=no").strip():
        raise SystemExit("uncommitted changes to tracked files: commit or stash them first")
    start = _git(root, "rev-parse", "--abbrev-ref", "HEAD").strip()
    if start == BRANCH or _marker(root).exists():
        raise SystemExit(f"already on {BRANCH}: run `slim.py off` first")
    _git(root, "switch", "-q", "-c", BRANCH)
    _git(root, "rm", "-q", "--", *LEAVE_OUT)
    _git(root, "-c", "user.name=bildwerk gpu", "-c", "user.email=gpu@bildwerk.local", "commit", "-q",
         "--no-verify", "-m", "gpu-slim: the shipped UNet left out of a device call (local only)")
    _marker(root).write_text(start)
    return start


def off(root: Path = ROOT) -> str:
    """Back to the branch ``on`` left, with every file; the slim branch is deleted."""
    marker = _marker(root)
    if not marker.exists():
        raise SystemExit("not slim (no record of a branch to go back to)")
    start = marker.read_text().strip()
    _git(root, "switch", "-q", start)
    _git(root, "branch", "-q", "-D", BRANCH)
    marker.unlink()
    return start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["on", "off"])
    a = ap.parse_args()
    if a.action == "on":
        print(f"on {BRANCH} (from {on()}): {', '.join(LEAVE_OUT)} left out until `slim.py off`")
    else:
        print(f"back on {off()}")


if __name__ == "__main__":
    main()
