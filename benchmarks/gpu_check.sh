#!/usr/bin/env bash
# The GPU check (issue 12): every figure of kcap on one GPU in <= 8 minutes, one JSON line each.
#
#   bash benchmarks/gpu_wheels.sh          # here, once: wheels the device lacks -> .gpu-wheels/
#   bash benchmarks/gpu_check.sh           # on the GPU machine (carry .gpu-wheels along)
#   bash benchmarks/gpu_check.sh --rehearse   # the same entry point on a CPU, in about a minute
#
# Stages (each under its own time limit, so one that hangs cannot eat the others' time):
#   env          torch, CUDA, the device, its peak FLOP/s in kcap's table
#   tests        the CUDA-marked tests (pytest -m cuda)
#   throughput   a ~20M-param GPT2 on bioS for a fixed number of steps: tokens/s, MFU, compile
#   packed       one lab model alone vs K = 64 packed lab models (tokens/s)
#   capacity     the largest GPT2 on bioS at 1000 exposures that trains in the budget: R, recall
# kcap runs from the source tree (PYTHONPATH=src); nothing is installed outside .gpu-site/.
set -uo pipefail
cd "$(dirname "$0")/.."
REHEARSE=""
[ "${1:-}" = "--rehearse" ] && REHEARSE="--rehearse"
OUT=${GPU_CHECK_OUT:-${OUT:-gpu-check-out}}
mkdir -p "$OUT"
SITE="$PWD/.gpu-site"
export PYTHONPATH="$PWD/src:$SITE"
export PYTHONUNBUFFERED=1

missing=""
python3 -c "import pydantic" 2>/dev/null || missing="$missing pydantic"
python3 -c "import pytest" 2>/dev/null || missing="$missing pytest"
if [ -n "$missing" ]; then
  if [ -d .gpu-wheels ]; then
    echo "installing$missing from .gpu-wheels into .gpu-site"
    python3 -m pip install -q --no-index --find-links .gpu-wheels --target "$SITE" $missing \
      || echo "pip install failed"
  else
    echo "missing:$missing and no .gpu-wheels/ (run benchmarks/gpu_wheels.sh where PyPI is reachable)"
  fi
fi

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout --signal=TERM --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
}

CHECK=(python3 benchmarks/gpu_check.py --out "$OUT" $REHEARSE)

stage env 60 "${CHECK[@]}" env
stage tests 120 python3 -m pytest -q -m cuda -p no:cacheprovider tests
stage throughput 150 "${CHECK[@]}" throughput
stage packed 90 "${CHECK[@]}" packed
if [ -n "$REHEARSE" ]; then
  stage capacity 120 "${CHECK[@]}" capacity --budget 5
else
  stage capacity 300 "${CHECK[@]}" capacity --budget 180
fi
echo "== gpu check done in $SECONDS s; figures are the JSON lines above"
