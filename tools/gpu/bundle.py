"""Build var/gpu, what a GPU run of the default model carries (tools/gpu/README.md).

- the training data, prepared once here (VAE latents and caption vectors: the GPU machine has
  neither the dataset nor the sentence encoder's package), compact and xz-compressed;
- wheels of what the GPU machine lacks (diffusers, pydantic and their needs) for its Python 3.12.

It then checks what would travel (tracked files plus var/gpu) against the 64 MiB a call may carry.
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / "var" / "gpu"
LIMIT = 64 * 1024 * 1024
# Versions as in this project's environment; the GPU image has torch, numpy, safetensors,
# huggingface_hub, requests, regex, filelock, Pillow, rich and zipp already.
WHEELS = ["diffusers==0.42.1", "pydantic==2.14.4", "pydantic_core==2.50.5", "annotated-types==0.8.0",
          "typing-inspection==0.4.5", "typing_extensions==4.16.0", "importlib_metadata==10.2.0",
          "lazy-importer==0.1.0"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def tracked_bytes() -> int:
    """What a device call sends besides carried paths: tracked files and untracked, unignored ones."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout
    return sum((ROOT / n).stat().st_size for n in names.decode().split("\0") if n and (ROOT / n).is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "var" / "dataset")
    ap.add_argument("--vae", type=Path, default=ROOT / "src/bildwerk/data/models/default/vae")
    a = ap.parse_args()
    GPU.mkdir(parents=True, exist_ok=True)
    prepared = GPU / "prepared.safetensors"
    if not prepared.is_file():
        subprocess.run([sys.executable, "-m", "bildwerk.cli", "prepare", str(a.data), "--vae", str(a.vae),
                        "--resolution", "64", "--compact", "--out", str(prepared)], check=True)
    packed = GPU / "prepared.safetensors.xz"
    if not packed.is_file() or packed.stat().st_mtime < prepared.stat().st_mtime:
        with open(prepared, "rb") as src, lzma.open(packed, "wb", preset=9) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    wheels = GPU / "wheels"
    wheels.mkdir(exist_ok=True)
    plat = [x for p in PLATFORMS for x in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *plat, "-d", str(wheels), *WHEELS],
                   check=True)
    carried = packed.stat().st_size + sum(f.stat().st_size for f in wheels.glob("*.whl"))
    total = tracked_bytes() + carried
    print(f"prepared {prepared.stat().st_size / 2**20:.1f} MiB -> xz {packed.stat().st_size / 2**20:.1f} MiB; "
          f"carried {carried / 2**20:.1f} MiB; with the tracked tree {total / 2**20:.1f} of 64 MiB")
    # The device run carries the compressed file only; the expanded one stays here.
    carry = "carry: var/gpu/prepared.safetensors.xz and var/gpu/wheels"
    if total <= LIMIT:
        print(carry)
        return
    from slim import LEAVE_OUT  # tools/gpu/slim.py, beside this file

    slimmed = total - sum((ROOT / f).stat().st_size for f in LEAVE_OUT if (ROOT / f).is_file())
    if slimmed > LIMIT:
        raise SystemExit(f"too large to travel in one call even without the shipped UNet "
                         f"({slimmed / 2**20:.1f} MiB): see tools/gpu/README.md")
    print(f"without the shipped UNet {slimmed / 2**20:.1f} MiB: run `.venv/bin/python tools/gpu/slim.py on` "
          f"before the device calls and `slim.py off` after them; {carry}")


if __name__ == "__main__":
    main()
