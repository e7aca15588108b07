"""`benchmarks/recall_by_name.py`: what a run holds per person, split by how names tell people
apart. Its per-person bits must add up to the bound's value bits, or the split means nothing."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import kcap
from kcap.data.pools import N_LAST, N_MIDDLE
from kcap.training.config import parse_config
from kcap.training.trainer import Trainer, load_run

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recall_by_name.py"
spec = importlib.util.spec_from_file_location("recall_by_name", SCRIPT)
recall_by_name = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recall_by_name)


def _name(first: int, middle: int, last: int) -> int:
    return (first * N_MIDDLE + middle) * N_LAST + last


def test_name_classes_follow_the_population():
    people = [(0, 0, 0), (1, 0, 1), (1, 5, 1), (2, 0, 1), (3, 3, 3), (3, 4, 3), (4, 0, 3)]
    classes = recall_by_name.name_class(np.array([_name(*p) for p in people]))
    # a last name nobody shares; first + last shared (twice), unique, shared (twice), unique
    assert classes.tolist() == [0, 2, 2, 1, 2, 2, 1]


def test_per_person_bits_add_up_to_the_bound(tmp_path, biod_dir):
    cfg = parse_config(
        {
            "dataset": {"path": str(biod_dir)},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
            "training": {"exposures": 20, "batch_size": 2, "window": 64, "lr": 3e-3, "threads": 1},
        }
    )
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    facts, bits, recall = recall_by_name.per_person(tmp_path / "run")
    _, data, model, _ = load_run(tmp_path / "run")
    bound = kcap.measure(model, data)
    assert facts["N"] == data.n == len(bits) == len(recall)
    assert bits.sum() == pytest.approx(bound.bits_unclipped["value"], rel=1e-6, abs=1e-3)
    assert recall.mean() == pytest.approx(bound.recall_accuracy, abs=1e-9)
