#!/usr/bin/env bash
# Download the wheels the GPU machine lacks (bench/gpu_wheels.txt) into build/gpu-wheels/, for
# Python 3.12 on x86-64 Linux, and check that the tree that travels to the machine still fits.
# Run it here, once, in the repository's root; build/ is ignored by .gitignore, so nothing is
# committed. The device call then carries build/gpu-wheels (see bench/gpu_run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DEST=build/gpu-wheels
rm -rf "$DEST" && mkdir -p "$DEST"
mapfile -t PINS < <(grep -v '^\s*#' bench/gpu_wheels.txt | grep -v '^\s*$')
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$DEST" "${PINS[@]}"
count=$(ls "$DEST"/*.whl | wc -l)
if [ "$count" -ne "${#PINS[@]}" ]; then
  echo "expected ${#PINS[@]} wheels, got $count" >&2; exit 1
fi
# What travels: tracked files, untracked files git does not ignore, and the carried wheels.
"$PY" - "$DEST" <<'PYEOF'
import os, subprocess, sys
from pathlib import Path
def size(args):
    out = subprocess.run(["git", "ls-files", "-z", *args], capture_output=True, check=True).stdout
    return sum(os.path.getsize(p) for p in out.decode().split("\0") if p and os.path.isfile(p))
tracked, untracked = size([]), size(["--others", "--exclude-standard"])
wheels = sum(p.stat().st_size for p in Path(sys.argv[1]).glob("*.whl"))
total, limit = tracked + untracked + wheels, 64 * 1024 * 1024
print(f"wheels {wheels / 1e6:.1f} MB + tracked {tracked / 1e6:.1f} MB + untracked {untracked / 1e6:.1f} MB"
      f" = {total / 1e6:.1f} MB of the {limit / 1e6:.1f} MB a device call takes")
sys.exit(0 if total <= limit else "too large for the device call (64 MiB): carry less")
PYEOF
