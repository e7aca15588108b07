"""bioD's cut name pools (`BioDParams.name_pool`): the names, their bits, the saved population
and the vocabulary they leave (the embedding's share of a tiny model's parameters)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kcap.data import pools as P
from kcap.data.biod import BioDParams, build_biod
from kcap.data.bios import rng_for, sample_names
from kcap.data.build import write_dataset
from kcap.data.dataset import load_dataset


def test_pooled_names_are_distinct_and_inside_the_cut_pools():
    names = sample_names(rng_for(0), 500, pool=9)
    parts = np.stack(P.split_name(names), axis=1)
    assert len(np.unique(names)) == 500 and parts.max() < 9
    everyone = sample_names(rng_for(1), 27, pool=3)  # the whole space of 3³ names
    assert sorted(P.pooled_name(np.arange(27), 3).tolist()) == sorted(everyone.tolist())
    with pytest.raises(ValueError, match=r"\[1, 27\]"):
        sample_names(rng_for(1), 28, pool=3)


def test_pooled_names_are_uniform_over_the_space():
    """Each of the 64 names of pools cut to 4 is drawn 1/64 of the time (first draws of 2,000
    seeds; a chi-square test at p = 1e-6 would fail a bias of a few percent)."""
    first = [int(sample_names(rng_for(s), 1, pool=4)[0]) for s in range(2000)]
    counts = np.unique(first, return_counts=True)[1]
    assert len(counts) == 64
    chi2 = float(((counts - 2000 / 64) ** 2 / (2000 / 64)).sum())
    assert chi2 < 63 + 6 * math.sqrt(2 * 63)


def test_the_full_pools_are_the_default():
    assert P.name_space() == P.N0 and P.pooled_name(12345) == 12345
    assert np.array_equal(sample_names(rng_for(5), 100), sample_names(rng_for(5), 100, pool=None))


def test_a_pooled_biod_round_trips_with_its_bits_and_a_small_vocabulary(tmp_path):
    p = BioDParams(200, 4, 1, 16, 1, 16, name_pool=8)
    built = build_biod(p, seed=3, vocab=400, tokenizer="word")
    write_dataset(tmp_path / "ds", *built, force=False)
    ds = load_dataset(tmp_path / "ds")
    assert ds.population.params == p
    assert ds.manifest["params"]["name_pool"] == 8
    assert ds.bits["name"] == pytest.approx(200 * math.log2(512 / 200))
    words = {w for i in range(ds.n) for w in ds.population.full_name(i).split(" ")}
    assert len(words) <= 24  # 8 first, 8 middle, 8 last names at most
    # a word-level vocabulary: the names, the 16 symbols and the template words, not ~1,800 names
    assert ds.manifest["vocab"]["used_tokens"] < 80
    full = build_biod(BioDParams(200, 4, 1, 16, 1, 16), seed=3, vocab=400, tokenizer="word")
    assert "name_pool" not in full[0]["params"]
    assert full[0]["vocab"]["used_tokens"] > 300
