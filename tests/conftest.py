"""Shared fixtures: small datasets built once per session (they are deterministic)."""

from __future__ import annotations

import pytest
import torch

from kcap.data.biod import BioDParams
from kcap.data.dataset import build_biod, build_bios, load_dataset, write_dataset

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
