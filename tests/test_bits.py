"""Bit formulas against hand-computed numbers (SPEC §2, §4; paper Prop. 2.3, Def. 4.3)."""

import math

import pytest

from kcap.data import pools as P
from kcap.data.biod import biod_bits
from kcap.data.bios import bios_bits


def test_constants():
    assert P.N0 == 160_000_000
    assert P.N_DATES == 67_200
    assert P.S0 == 212_083_200_000_000  # 2 * 67200 * 200 * 300 * 100 * 263
    assert pytest.approx(47.5917, abs=1e-4) == P.ATTRIBUTE_BITS


@pytest.mark.parametrize(
    ("n", "bits_per_person"),
    [(10_000, 61.56), (100_000, 58.24), (1_000_000, 54.91), (20_000_000, 50.59)],
)
def test_bios_bits_match_paper_table(n, bits_per_person):
    # reference/paper-3.3.md §2.7: bits/person = log2(N0/N) + 47.59
    assert bios_bits(n)["total"] / n == pytest.approx(bits_per_person, abs=0.01)


def test_bios_bits_components():
    b = bios_bits(1600)
    assert b["name"] == pytest.approx(1600 * math.log2(100_000))  # N0/N = 1e5
    assert b["value"] == pytest.approx(1600 * math.log2(212_083_200_000_000))
    assert b["diversity"] == 0
    assert b["total"] == pytest.approx(b["name"] + b["value"])


def test_biod_bits_hand_computed():
    # N=1000, K=4, C=2, D=16, L=3, T=8: names 1000*log2(160000); values 1000*4*2*4 bits;
    # diversity 4*16*(3*3 - 4) = 320 bits.
    b = biod_bits(1000, 4, 2, 16, 3, 8)
    assert b["name"] == pytest.approx(1000 * math.log2(160_000))
    assert b["value"] == pytest.approx(32_000)
    assert b["diversity"] == pytest.approx(320)
    assert b["total"] == pytest.approx(b["name"] + 32_320)


def test_biod_bits_with_cut_name_pools():
    """Name pools cut to S entries each: the names are chosen among S³, not N0."""
    b = biod_bits(1000, 4, 2, 16, 3, 8, name_pool=20)
    assert b["name"] == pytest.approx(1000 * math.log2(8))  # 8,000 names for 1,000 people
    assert b["value"] == pytest.approx(32_000) and b["diversity"] == pytest.approx(320)
    assert biod_bits(1000, 4, 2, 16, 3, 8, name_pool=None) == biod_bits(1000, 4, 2, 16, 3, 8)


def test_r_max():
    # Figures worked out independently (30-digit decimal logs) from SPEC §4:
    # bioS(10^6): 10^6·log2(1.6e8 / 10^6) + 10^6·log2(S0 = 2·67200·200·300·100·263 = 2.120832e14)
    #           = 7,321,928.0949 + 47,591,623.6719 = 54,913,551.7668 bits; at P = 27.46M: 1.99977.
    # Catches a wrong pool size, N0, S0 or name term, not just a wrong division.
    b = bios_bits(1_000_000)
    assert b["name"] == pytest.approx(7_321_928.0949, abs=1e-3)
    assert b["value"] == pytest.approx(47_591_623.6719, abs=1e-3)
    assert b["total"] / 27_460_000 == pytest.approx(1.9997651772, rel=1e-9)
    # the paper's scale: bioS(20M) holds 1,011,832,473.4 bits; over GPT2-small's 88M: 11.498
    assert bios_bits(20_000_000)["total"] / 88_000_000 == pytest.approx(11.49809629, rel=1e-8)
    # bioD(N=1000, K=4, C=2, D=16, L=3, T=8): 1000·log2(160000) + 1000·4·2·4 + 4·16·(3·3 - 4)
    #           = 17,287.7124 + 32,000 + 320 = 49,607.7124 bits; at P = 10,000: 4.96077
    assert biod_bits(1000, 4, 2, 16, 3, 8)["total"] / 10_000 == pytest.approx(4.960771238, rel=1e-9)
