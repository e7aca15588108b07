"""Dataset families behind one registry: every kind is one module with a `Family`, and a new
family (`tests/pairs.py`, one file) is built, loaded, trained and measured end to end once it is
registered, without a line of kcap changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tests import pairs

from kcap.data.biod import biod_bits
from kcap.data.build import write_dataset
from kcap.data.dataset import FAMILIES, family, load_dataset, register
from kcap.data.family import Family
from kcap.errors import KcapError


@pytest.fixture
def with_pairs(monkeypatch):
    """The toy family registered for one test (the registry is restored after it)."""
    monkeypatch.setitem(FAMILIES, "pairs", pairs.FAMILY)
    return pairs.FAMILY


def test_every_kind_is_registered_by_its_family_module():
    homes = {
        "bios": "kcap.data.bios",
        "biod": "kcap.data.biod",
        "junk": "kcap.data.junk",
        "bior": "kcap.data.bior",
        "random": "kcap.data.random_strings",
    }
    assert {kind: FAMILIES[kind].build.__module__ for kind in homes} == homes
    for kind, fam in FAMILIES.items():
        assert fam.kind == kind and fam.check.__module__ == fam.build.__module__


def test_a_kind_is_one_family():
    twin = Family("bios", *(lambda *a, **k: None for _ in range(4)), measure="bios")
    with pytest.raises(KcapError, match="another family's kind"):
        register(twin)
    assert register(FAMILIES["bios"]) is FAMILIES["bios"]  # registering again is harmless
    with pytest.raises(KcapError, match="unknown dataset kind 'pairs'"):
        family("pairs")


def test_an_unregistered_kind_is_refused_on_load(tmp_path, with_pairs):
    out = tmp_path / "ds"
    write_dataset(out, *with_pairs.build(n=6, d=4, seed=0), force=False)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "kind": "triples"}))
    with pytest.raises(KcapError, match="unknown dataset kind 'triples'"):
        load_dataset(out)


def test_a_family_in_one_file_is_built_trained_and_measured(tmp_path, with_pairs):
    from kcap.training.config import parse_config
    from kcap.training.trainer import Trainer

    fam = family("pairs")
    with pytest.raises(KcapError, match="--d"):
        fam.check(n=8, d=1, seed=0)
    out = tmp_path / "ds"
    write_dataset(out, *fam.build(n=16, d=8, seed=1), force=False)
    ds = load_dataset(out)
    assert (
        ds.kind == "pairs" and ds.measure_kind == "biod" and isinstance(ds.population, pairs.Pairs)
    )
    assert ds.bits == pytest.approx(biod_bits(16, 1, 1, 8, 1, 8))
    (doc,) = ds.source(eval_=True).documents(0, np.array([3]))
    assert doc.text.endswith(f"'s pair is <t{ds.population.value[3]}>.")

    cfg = parse_config(
        {
            "dataset": {"path": str(out)},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
            "training": {"exposures": 40, "batch_size": 8, "window": 16, "lr": 1e-2, "threads": 1},
        }
    )
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    r = trainer.fit()
    assert trainer.summary()["exposures"] == {"target": 40, "min": 40, "max": 40}
    assert r.kind == "pairs" and r.n_people == r.n_measured == 16
    assert r.data_bits == pytest.approx(ds.bits["total"])
    assert set(r.bits_per_attribute) == {"ID 1"}
    assert 0 < r.bits["total"] <= r.data_bits  # the bioD bound, on a family kcap never saw
