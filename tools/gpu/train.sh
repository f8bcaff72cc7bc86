#!/usr/bin/env bash
# Runs ON the lent GPU machine, from the repository root, with var/gpu carried (tools/gpu/README.md):
# installs the carried wheels, expands the prepared data, trains, and leaves each model in $OUT/NAME
# as parts small enough to come back (the VAE stays behind: it is the shipped one).
#
# Arguments go to every run of train_default.py (--minutes, --batch-size...). JOBS names the runs
# that share the GPU at once, space-separated, each NAME or NAME=EXTRA with EXTRA's arguments joined
# by '+': JOBS="narrow deep256=--channels=64,128,256". A model this small leaves most of an H100
# idle between kernel launches, so two runs side by side cost each little of its speed.
set -euo pipefail
if ! python3 -c "import diffusers, pydantic" 2>/dev/null; then  # the GPU image lacks both
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site var/gpu/wheels/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}
rm -rf /tmp/gpu-run  # a fresh run each call: the step budget is measured anew
python3 tools/gpu/parts.py unxz var/gpu/prepared.safetensors.xz
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
jobs=(${JOBS:-default})
threads=$(( $(nproc) / ${#jobs[@]} )); (( threads > 0 )) || threads=1
pids=()
for job in "${jobs[@]}"; do
  name=${job%%=*}
  extra=()
  if [[ $job == *=* ]]; then IFS='+' read -r -a extra <<<"${job#*=}"; fi
  mkdir -p /tmp/gpu-run/"$name"
  OMP_NUM_THREADS=$threads python3 tools/gpu/train_default.py --out /tmp/gpu-run/"$name" "$@" "${extra[@]}" \
    >/tmp/gpu-run/"$name".log 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!jobs[@]}"; do
  name=${jobs[$i]%%=*}
  if wait "${pids[$i]}"; then
    cp /tmp/gpu-run/"$name".log /tmp/gpu-run/"$name"/model/run.log
    python3 tools/gpu/parts.py pack /tmp/gpu-run/"$name"/model "$OUT/$name" --exclude vae
  else
    failed=1
  fi
  echo "== $name"; tail -n 5 /tmp/gpu-run/"$name".log
done
exit $failed
