#!/usr/bin/env bash
# Install kcap into the current Python (add --dev for the test/lint extras).
# torch comes first: an installed torch is kept; otherwise torch 2.13.0 is installed before
# kcap, so that a machine with a local CPU wheel never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
extras=""
if [ "${1:-}" = "--dev" ]; then extras="[dev]"; fi
"$PY" -m pip install --quiet --disable-pip-version-check -e ".${extras}"
