"""Shared fixtures: small datasets built once per session (they are deterministic)."""

from __future__ import annotations

import pytest
import torch

from kcap.data.biod import BioDParams, build_biod
from kcap.data.bios import build_bios
from kcap.data.build import write_dataset
from kcap.data.dataset import load_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def bios_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bios") / "ds"
    write_dataset(out, *build_bios(40, seed=3, vocab=600), force=False)
    return out


@pytest.fixture(scope="session")
def bios_ds(bios_dir):
    return load_dataset(bios_dir)


@pytest.fixture(scope="session")
def biod_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("biod") / "ds"
    write_dataset(out, *build_biod(BioDParams(30, 3, 2, 16, 2, 10), seed=5, vocab=400), force=False)
    return out


@pytest.fixture(scope="session")
def biod_ds(biod_dir):
    return load_dataset(biod_dir)


@pytest.fixture(scope="session")
def junk_dirs(tmp_path_factory):
    """Tiny junk mixtures: random junk with the domain token on useful biographies (r = 3), and
    repetitive junk of 12 people with the junk token on junk biographies (r = 1)."""
    from kcap.data.junk import build_junk

    root = tmp_path_factory.mktemp("junk")
    built = {
        "random": build_junk(24, 3, "random", seed=4, domain="useful", vocab=600),
        "repetitive": build_junk(24, 1, "repetitive", seed=4, domain="junk", junk_n=12, vocab=600),
    }
    for name, b in built.items():
        write_dataset(root / name, *b, force=False)
    return {name: root / name for name in built}


@pytest.fixture(scope="session")
def random_dir(tmp_path_factory):
    from kcap.data.random_strings import build_random

    out = tmp_path_factory.mktemp("random") / "ds"
    write_dataset(out, *build_random(24, 8, 16, seed=2), force=False)
    return out
