#!/usr/bin/env bash
# Runs ON the lent GPU machine, from the repository root, with var/gpu carried (tools/gpu/README.md):
# installs the carried wheels, expands the prepared data, trains, and leaves the model in $OUT
# as parts small enough to come back. Arguments go to train_default.py (--minutes, --channels...).
set -euo pipefail
if ! python3 -c "import diffusers, pydantic" 2>/dev/null; then  # the GPU image lacks both
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site var/gpu/wheels/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1
rm -rf /tmp/gpu-run  # a fresh run each call: the step budget is measured anew
python3 tools/gpu/parts.py unxz var/gpu/prepared.safetensors.xz
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 tools/gpu/train_default.py --out /tmp/gpu-run --device cuda "$@"
python3 tools/gpu/parts.py pack /tmp/gpu-run/model "${OUT:-/tmp/gpu-out}"
