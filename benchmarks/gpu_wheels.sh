#!/usr/bin/env bash
# Fetch the wheels the GPU machine lacks into .gpu-wheels/ (git-ignored), here where PyPI is
# reachable: the device has Python 3.12 with torch, numpy, tokenizers, transformers, typer, rich,
# pyyaml and matplotlib, but neither pydantic nor pytest. Carry .gpu-wheels to the device with the
# working tree; benchmarks/gpu_check.sh installs from it without any index.
set -euo pipefail
cd "$(dirname "$0")/.."
pydantic=$(python3 -c "import pydantic; print(pydantic.VERSION)")
pytest=$(python3 -c "import pytest; print(pytest.__version__)")
rm -rf .gpu-wheels
pip download -q --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
  -d .gpu-wheels "pydantic==$pydantic" "pytest==$pytest"
ls .gpu-wheels
