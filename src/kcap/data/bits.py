"""Exact knowledge bits of each dataset, by component (SPEC §2 and §4), and R_max for a model.

bioS(N):  name = N·log2(N0/N), value = N·log2(S0).
bioD:     name = N·log2(N0/N), value = N·K·C·log2(D), diversity = K·D·log2(T^L/D).
"""

from __future__ import annotations

import math

from kcap.data import pools as P


def bios_bits(n: int) -> dict[str, float]:
    """Bits of bioS(N): the names chosen among N0 plus the attributes of every person."""
    name = n * math.log2(P.N0 / n)
    value = n * P.ATTRIBUTE_BITS
    return {"name": name, "value": value, "diversity": 0.0, "total": name + value}


def biod_bits(n: int, k: int, c: int, d: int, l: int, t: int) -> dict[str, float]:  # noqa: E741
    """Bits of bioD(N, K, C, D, L, T)."""
    name = n * math.log2(P.N0 / n)
    value = n * k * c * math.log2(d)
    diversity = k * d * (l * math.log2(t) - math.log2(d))
    return {"name": name, "value": value, "diversity": diversity, "total": name + value + diversity}


def r_max(bits_total: float, params: int) -> float:
    """The capacity ratio of a model that stores every bit: total bits / P."""
    return bits_total / params
