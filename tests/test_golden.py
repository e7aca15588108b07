"""Behaviour is pinned: dataset bytes, stream windows, measurements and recipe run ids of every
family equal the golden fingerprints (`tests/golden.py`), so moving code changes no result."""

from __future__ import annotations

import json

import pytest
from tests.golden import GOLDEN, fingerprints


def test_every_family_matches_its_golden_fingerprint(tmp_path):
    expected = json.loads(GOLDEN.read_text())
    actual = fingerprints(tmp_path)
    assert actual.keys() == expected.keys()
    assert actual["recipes"] == expected["recipes"], "recipe run ids changed"
    for family in expected.keys() - {"recipes"}:
        got, want = actual[family], expected[family]
        assert got["files"] == want["files"], f"{family}: dataset bytes changed"
        assert got["stream"] == want["stream"], f"{family}: stream windows changed"
        # float32 forward passes: equal up to the last digits kept (machines differ in SIMD)
        assert got["measure"] == pytest.approx(want["measure"], rel=1e-5, abs=2e-4), family
