"""The capacity planner: how many parameters a model needs to store B bits of knowledge.

P = B / R, where R (bits per parameter) comes from

1. **the user's own results store**: the fitted law (analysis.py) of the runs with the same
   exposures and architecture -- the dataset's family when one is given, else bioS, else any --
   with its interval (over seeds, or bootstrapped over models); or, when it has none,
2. **the paper's constants** (paper.PAPER_LAWS): at 100 and 1000 exposures as published;
   between them R and its bounds are interpolated linearly in log(exposures); above 1000 the
   1000-exposure figure holds (the paper finds no gain from longer training); below 100 the
   100-exposure figure is used and flagged as optimistic. An architecture the paper has no
   figure for at those exposures falls back to GPT2's, and says so.

The interval on P is [B / R_high, B / R_low]; an open end of R's interval leaves P's open.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from kcap.errors import KcapError
from kcap.experiments.analysis import analyse, family_label, load_points
from kcap.experiments.paper import PAPER_LAWS, PaperLaw

__all__ = ["Plan", "dataset_bits", "paper_law", "parse_bits", "plan"]

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


@dataclass
class Plan:
    bits: float
    exposures: int
    arch: str
    R: float
    R_low: float | None
    R_high: float | None
    P: float
    P_low: float | None
    P_high: float | None
    source: str  # "results store" or "paper"
    detail: str
    family: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def parse_bits(text: str) -> float:
    """``1e6``, ``5.5M``, ``300k``, ``2G`` -> bits."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*", str(text))
    if not m:
        raise KcapError("--bits", f"expected a number such as 5e6 or 5M; got {text!r}")
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if value <= 0:
        raise KcapError("--bits", "must be positive")
    return value


def dataset_bits(path: str | Path) -> tuple[float, str]:
    """(total bits, family) of a generated dataset directory."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        raise KcapError("--dataset", f"no dataset at {path} (missing manifest.json)")
    m = json.loads(manifest.read_text())
    params = m.get("params", {})
    return float(m["bits"]["total"]), family_label({"kind": m["kind"], **params})


def paper_law(exposures: int, arch: str) -> tuple[PaperLaw, str]:
    """The paper's law for (exposures, arch), with a note on how it was obtained."""
    notes = []

    def at(e: int) -> PaperLaw:
        law = PAPER_LAWS.get((e, arch))
        if law is None:
            notes.append(f"the paper gives no figure for {arch} at {e} exposures: using GPT2's")
            law = PAPER_LAWS[(e, "gpt2")]
        return law

    if exposures >= 1000:
        law = at(1000)
        if exposures > 1000:
            notes.append("above 1000 exposures the paper finds no further gain")
    elif exposures <= 100:
        law = at(100)
        if exposures < 100:
            notes.append("the paper measures no fewer than 100 exposures: optimistic")
    else:
        lo, hi = at(100), at(1000)
        w = (math.log(exposures) - math.log(100)) / (math.log(1000) - math.log(100))

        def mix(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a + w * (b - a)

        law = PaperLaw(
            mix(lo.R, hi.R),
            mix(lo.low, hi.low),
            mix(lo.high, hi.high),
            f"interpolated in log(exposures) between {lo.source} and {hi.source}",
        )
    return law, "; ".join(dict.fromkeys(notes))


def plan(
    bits: float,
    *,
    exposures: int = 1000,
    arch: str = "gpt2",
    db: str | Path | None = None,
    family: str | None = None,
) -> Plan:
    """Parameters needed to store ``bits`` after ``exposures`` exposures with ``arch``."""
    if bits <= 0:
        raise KcapError("--bits", "must be positive")
    if exposures < 1:
        raise KcapError("--exposures", "must be at least 1")
    law_source = None
    if db is not None:
        laws = [
            law
            for law in analyse(load_points(db))
            if law.exposures == exposures
            and law.arch == arch
            and law.quant is None
            and law.R is not None
        ]
        prefer = [family, "bioS"]
        laws.sort(key=lambda law: prefer.index(law.family) if law.family in prefer else 2)
        if laws:
            law_source = laws[0]
    if law_source is not None:
        lo, hi = law_source.interval or (law_source.R, law_source.R)
        r, r_low, r_high, source = law_source.R, lo, hi, "results store"
        detail = (
            f"law of {law_source.label}: {law_source.n_at_capacity} models at capacity, "
            f"{len(law_source.points)} runs, interval: {law_source.interval_over}"
        )
        fam = law_source.family
    else:
        pl, note = paper_law(exposures, arch)
        r, r_low, r_high, source = pl.R, pl.low, pl.high, "paper"
        detail = pl.source + (f" ({note})" if note else "")
        if db is not None:
            detail = f"no fitted law for {arch} at {exposures} exposures in {db}; " + detail
        fam = family
    return Plan(
        bits=bits,
        exposures=exposures,
        arch=arch,
        R=r,
        R_low=r_low,
        R_high=r_high,
        P=bits / r,
        P_low=None if not r_high else bits / r_high,
        P_high=None if not r_low else bits / r_low,
        source=source,
        detail=detail,
        family=fam,
    )
