#!/usr/bin/env bash
# The one command for the lent GPU machine (docs/benchmarks.md, "GPU speed"): install the wheels
# bench/gpu_prepare.sh downloaded (carried as build/gpu-wheels), run bench/gpu_speed.py within a
# wall-time budget, and leave its JSON, its markdown, its log and nvidia-smi's view in $OUT.
#
#   bash bench/gpu_run.sh                                   # on the device, carry build/gpu-wheels
#   BUDGET=300 bash bench/gpu_run.sh --sections sdxl,sd2    # any gpu_speed.py arguments after
#
# BUDGET (default 510 s) bounds the measurements; the whole command stays under the device's
# 10-minute limit (wheels ~15 s, imports, the budget, then at most 60 s more before `timeout`
# stops it; the JSON is rewritten after every measurement, so a stop loses none of them).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-speed-out}
BUDGET=${BUDGET:-510}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  build/gpu-wheels/*.whl || { echo "wheels did not install; run bench/gpu_prepare.sh and carry build/gpu-wheels"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export BENCH_COMMIT=${BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || true)}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
timeout -k 10 $((${BUDGET%.*} + 60)) python3 bench/gpu_speed.py --budget-s "$BUDGET" \
  --out "$OUT/$(date -u +%F)-gpu-speed.json" "$@" 2>&1 | tee "$OUT/gpu-speed.log"
status=${PIPESTATUS[0]}
ls -la "$OUT"
exit "$status"
