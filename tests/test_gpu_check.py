"""The GPU check's entry points stay runnable on a CPU (the full rehearsal takes minutes:
``bash benchmarks/gpu_check.sh --rehearse``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _stage(stage: str, tmp_path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", stage, "--out", str(tmp_path), "--rehearse"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    return json.loads(line)


def test_env_and_packed_stages_print_one_json_line(tmp_path):
    env = _stage("env", tmp_path)
    assert env["stage"] == "env" and env["torch"] and env["device"] == "cpu"
    assert env["peak_flops_bf16"] is None  # a CPU has no entry in the peak table
    packed = _stage("packed", tmp_path)
    assert packed["stage"] == "packed" and packed["K"] == 4
    assert packed["single_tokens_per_s"] > 0 and packed["packed_tokens_per_s"] > 0


def test_the_shell_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_check.sh")]).returncode == 0
