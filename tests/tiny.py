"""Tiny run configs and sweep grids that several test modules train (seconds each on a CPU)."""

from __future__ import annotations

import json
from pathlib import Path


def tiny_run(dataset_dir, **training) -> dict:
    """A raw run config: a 1-layer d-32 GPT2 on ``dataset_dir``, one thread, logged each step."""
    return {
        "name": "tiny",
        "dataset": {"path": str(dataset_dir)},
        "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
        "training": {
            "exposures": 3,
            "batch_size": 2,
            "window": 64,
            "lr": 3e-3,
            "threads": 1,
            "checkpoint_every": 1000,
            "log_every": 1,
            **training,
        },
        "measurement": {"batch_size": 40},
    }


def tiny_grid(path: Path, *, measurement: dict | None = None, **training) -> Path:
    """Write a grid of two tiny real runs (seeds 0 and 1) on one generated bioS to ``path``."""
    grid = {
        "name": "tiny",
        "base": {
            "dataset": {"kind": "bios", "n": 30, "seed": 1, "vocab": 600},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 16}},
            "training": {"batch_size": 4, "window": 64, "log_every": 5, **training},
            "measurement": {"batch_size": 30, **(measurement or {})},
        },
        "product": {"training.seed": [0, 1]},
    }
    path.write_text(json.dumps(grid))
    return path
