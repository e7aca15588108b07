"""Determinism, written down (issue 14, item 7; the README's "Determinism" says what holds).

Same seed -> the same dataset bytes, the same training stream, the same CPU training result (at
the same thread count) and the same results-store row. What other tests already pin is not
repeated here:

- ``tests/test_golden.py``: every family's dataset bytes and first stream windows equal fixed
  fingerprints (``tests/golden.json``), so a seed gives the same bytes across time and machines;
- ``tests/test_cli.py::test_same_seed_byte_identical`` (bioD) and
  ``tests/test_data_kinds_cli.py::test_same_seed_byte_identical`` (repetitive junk): two CLI
  generations, the same bytes;
- ``tests/test_trainer.py::test_resume_equals_uninterrupted``: a run stopped and resumed equals
  an uninterrupted one bitwise (weights and measure.json);
- ``tests/test_stream.py::test_resume_at_random_step_yields_identical_remaining_stream``.

Added here: bioS and random strings generated twice into two folders (every file compared), the
whole training stream of two copies, and two end-to-end ``kcap train`` runs into two folders and
two stores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from kcap.cli.main import app
from kcap.data.dataset import load_dataset
from kcap.experiments.store import ResultsStore
from kcap.tokenization.factory import make_stream
from kcap.training.trainer import load_run

runner = CliRunner()

#: Store-row fields that legitimately differ between two identical runs: wall-clock timings and
#: the host (``timings`` holds wall_s, train_s, tokens_per_s and host), where the run was
#: written, when the row was created / updated, and the random token of the run's claim.
VOLATILE_ROW_FIELDS = ("timings", "host", "run_dir", "created_at", "updated_at", "claim_token")

FAMILIES = {
    "bios": ["bios", "--n", "30", "--vocab", "300"],
    "random": ["random", "--m", "20", "--s", "8", "--v", "32"],
}


def _generate(family: str, out: Path, seed: int) -> Path:
    r = runner.invoke(app, ["data", *FAMILIES[family], "--seed", str(seed), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def bios_twice(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("determinism")
    return _generate("bios", root / "a", 7), _generate("bios", root / "b", 7)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_same_dataset_bytes(family, tmp_path, bios_twice):
    if family == "bios":
        a, b = bios_twice
    else:
        a, b = _generate(family, tmp_path / "a", 7), _generate(family, tmp_path / "b", 7)
    first, second = _files(a), _files(b)
    assert {"manifest.json", "population.npz", "tokenizer.json"} <= first.keys()
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] == second[name], f"{family}: {name} differs"
    other = _files(_generate(family, tmp_path / "other-seed", 8))
    assert other["population.npz"] != first["population.npz"]  # the seed is what decides


def _windows(folder: Path, seed: int) -> list[tuple]:
    stream = make_stream(load_dataset(folder), exposures=3, seed=seed, window=32)
    return [(w.ids.tolist(), w.people.tolist(), w.labels.tolist(), w.source) for w in stream]


def test_same_seed_same_stream(bios_twice):
    a, b = bios_twice
    first = _windows(a, seed=3)
    assert len(first) > 30 and first == _windows(b, seed=3)  # every window, start to end
    assert _windows(a, seed=4) != first  # another training seed, another order


def _train(tmp_path: Path, name: str) -> Path:
    """``kcap train`` on a dataset the config generates, into RUN_DIR ``name`` and its own store
    ``name.db``; one CPU thread (the thread count changes float summation order)."""
    config = {
        "name": "determinism",
        "dataset": {"kind": "bios", "n": 16, "seed": 1, "vocab": 300},
        "model": {"preset": "gpt2-1-2", "overrides": {"d_model": 32}},
        "training": {
            "exposures": 3,
            "batch_size": 2,
            "window": 64,
            "seed": 5,
            "device": "cpu",
            "threads": 1,
            "checkpoint_every": 10,
            "log_every": 1,
        },
        "measurement": {"every": 20, "during_max_people": 8, "batch_size": 16},
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / name
    r = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--db", f"{out}.db"])
    assert r.exit_code == 0, r.output
    return out


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def _row(run: Path) -> dict:
    with ResultsStore(f"{run}.db") as store:
        (record,) = store.list_runs()
    row = record.to_dict()
    assert row["status"] == "finished"
    return row


def test_same_config_same_cpu_training_and_store_row(tmp_path):
    a, b = _train(tmp_path, "a"), _train(tmp_path, "b")
    # the dataset the config generates
    assert _files(a / "dataset") == _files(b / "dataset")
    # every logged loss, the final weights and the final measurement, bitwise
    losses = _losses(a)
    assert len(losses) > 10 and losses == _losses(b)
    _, _, model_a, params_a = load_run(a)
    _, _, model_b, params_b = load_run(b)
    assert params_a == params_b
    state_b = model_b.state_dict()
    for key, tensor in model_a.state_dict().items():
        assert torch.equal(tensor, state_b[key]), key
    assert (a / "measure.json").read_bytes() == (b / "measure.json").read_bytes()
    assert not np.isnan(json.loads((a / "measure.json").read_text())["bits"]["total"])
    # the store rows: equal but for timings, host, paths and times (VOLATILE_ROW_FIELDS)
    row_a, row_b = _row(a), _row(b)
    assert row_a["run_dir"] != row_b["run_dir"]
    assert row_a["timings"].keys() == row_b["timings"].keys()
    assert {k: v for k, v in row_a.items() if k not in VOLATILE_ROW_FIELDS} == {
        k: v for k, v in row_b.items() if k not in VOLATILE_ROW_FIELDS
    }
