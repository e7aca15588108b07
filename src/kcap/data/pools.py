"""The bioS value pools: names, cities, universities, majors, companies (package data files).

The sizes are fixed by the paper (SPEC §2) and checked when the pools are loaded, so every bit
count derived from them is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

N_FIRST, N_MIDDLE, N_LAST = 400, 400, 1000
N0 = N_FIRST * N_MIDDLE * N_LAST  # 1.6e8 full names
#: The largest name pool a dataset may shrink the pools to (`name_space`): the smallest pool.
MAX_NAME_POOL = min(N_FIRST, N_MIDDLE, N_LAST)
N_MONTHS, N_DAYS, N_YEARS, FIRST_YEAR = 12, 28, 200, 1900
N_DATES = N_MONTHS * N_DAYS * N_YEARS  # 67,200
N_CITIES, N_UNIVERSITIES, N_MAJORS, N_COMPANIES, N_GENDERS = 200, 300, 100, 263, 2
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

#: S0, the number of distinct attribute profiles of one person (work city adds no bits).
S0 = N_GENDERS * N_DATES * N_CITIES * N_UNIVERSITIES * N_MAJORS * N_COMPANIES
#: Bits per person carried by the attributes alone: log2(S0) = 47.59.
ATTRIBUTE_BITS = math.log2(S0)


@dataclass(frozen=True)
class Pools:
    """All value pools, as tuples of strings in file order."""

    first: tuple[str, ...]
    middle: tuple[str, ...]
    last: tuple[str, ...]
    cities: tuple[str, ...]
    universities: tuple[str, ...]
    majors: tuple[str, ...]
    companies: tuple[str, ...]
    company_hq: tuple[str, ...]  # company_hq[i] is the headquarters city of companies[i]


def _lines(name: str) -> list[str]:
    text = resources.files("kcap.data").joinpath("pools", name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line]


def _checked(name: str, values: list[str], size: int) -> tuple[str, ...]:
    if len(values) != size:
        raise RuntimeError(f"pool {name} has {len(values)} entries, expected {size}")
    if len(set(values)) != size:
        raise RuntimeError(f"pool {name} has duplicate entries")
    return tuple(values)


@cache
def load_pools() -> Pools:
    """Load and validate the package's value pools (cached)."""
    rows = [line.split("\t") for line in _lines("companies.tsv")]
    if any(len(r) != 2 for r in rows):
        raise RuntimeError("pool companies.tsv: every line must be 'Company<TAB>City, ST'")
    return Pools(
        first=_checked("first_names", _lines("first_names.txt"), N_FIRST),
        middle=_checked("middle_names", _lines("middle_names.txt"), N_MIDDLE),
        last=_checked("last_names", _lines("last_names.txt"), N_LAST),
        cities=_checked("cities", _lines("cities.txt"), N_CITIES),
        universities=_checked("universities", _lines("universities.txt"), N_UNIVERSITIES),
        majors=_checked("majors", _lines("majors.txt"), N_MAJORS),
        companies=_checked("companies", [r[0] for r in rows], N_COMPANIES),
        company_hq=tuple(r[1] for r in rows),
    )


def split_name(index):
    """(first, middle, last) pool indices of a name index in [0, N0); ints or numpy arrays."""
    first, rest = divmod(index, N_MIDDLE * N_LAST)
    middle, last = divmod(rest, N_LAST)
    return first, middle, last


def name_space(pool: int | None = None) -> int:
    """How many full names a dataset draws from: N0, or pool³ when each of the first, middle and
    last name pools is cut to its first ``pool`` entries (a smaller vocabulary: bioD's
    ``name_pool``)."""
    return N0 if pool is None else pool**3


def pooled_name(rank, pool: int | None = None):
    """The name index (in [0, N0)) of the rank-th name of `name_space(pool)`, ints or numpy
    arrays: first, middle and last name each among the first ``pool`` entries of their pool.
    The identity for the full pools."""
    if pool is None:
        return rank
    first, rest = divmod(rank, pool * pool)
    middle, last = divmod(rest, pool)
    return (first * N_MIDDLE + middle) * N_LAST + last


def name_parts(index: int) -> tuple[str, str, str]:
    """The first, middle and last name of a name index in [0, N0)."""
    pools = load_pools()
    first, middle, last = split_name(int(index))
    return pools.first[first], pools.middle[middle], pools.last[last]


def format_date(month: int, day: int, year_index: int) -> str:
    """Render a birth date, e.g. (9, 1, 96) -> "October 2, 1996" (month and day 0-based)."""
    return f"{MONTHS[month]} {day + 1}, {FIRST_YEAR + year_index}"
