"""Capacity laws from finished runs: peak capacity ratios and the fitted bits-per-parameter law.

Runs are grouped by (dataset family, exposures, architecture). Within a group:

- **Points.** Each finished run is a point (P, bits stored, data bits, N, ...). Runs that differ
  only in optimisation settings (learning rate, batch, weight decay, warmup) are merged into the
  best of them -- the paper reports the best of its learning rates. Quantized measurements
  (`kcap quantize`) form their own groups by bit width; within one, runs that differ only in the
  quantizer (GPTQ or RTN, grid, group size) merge the same way: the best quantizer counts, and
  the group names the quantizers that counted (``Law.quantizers``).
- **Peak R** is the largest bits/P of any point, overall and per N (Result 1's "peak R(F)").
- **A model's capacity** C(m) is the most bits that model (one shape, one replicate = dataset
  seed and training seed) stored on the datasets of one *setting* (the dataset without its N:
  a bioD setting is one (K, C, D, L, T)). The model is *at capacity* on that setting when some
  dataset held more than C(m)/(1 - δ) bits (δ = 0.1) and its bits stopped moving with N
  (``plateau``: among the datasets it was over-filled with, i.e. stored less than 90% of, the
  best run at the largest N held within 10% both ways of the most it stored on a smaller one: a
  plateau is flat, neither still rising nor falling, and holds at least half of C(m), else it is
  a collapse of learning on larger data). C(m) is the peak, as the paper's: a model
  may store more of a dataset about its size (nearly all of it) than of the larger ones on its
  plateau (measured: d 32 at 1000 exposures held 54.8k bits of N = 800, 93% of it, and 46.5k of
  both N = 1,600 and 3,200). Models that stored (nearly) everything they were shown say nothing
  about their capacity; a model seen at one N, whose bits still rise with N, or whose bits fall
  on larger data, may simply be under-trained: only a plateau across N shows a limit. Falling
  bits are the mark of a learning limit, not a capacity: a model that begins to memorise a
  person only after tens of exposures, later the more people it meets, stores less of larger
  datasets although nothing bounds what it could hold (measured at lab scale, configs/README.md
  step 5; ``tests/synthetic_runs.late_onset`` is that learner). A flat plateau is the paper's
  capacity *at that exposure count* whatever limits it: at 100 exposures models hold about half
  of what 1000 give them, and bits flat across N are what the paper reads as R. A shape run
  with several seeds is at capacity only where every seed that ran it is (`_every_seed`): seed
  noise on a learning curve can make one seed's bits read flat. A seed that could not read a
  plateau (over-filled at one N only) does not vote.
- **The law** is bits = R·P, with R the *median* of C(m)/P(m) over the models at capacity: the
  robust plateau of bits/P (an under-trained or oddly shaped model moves a median little, and
  the paper's claim is that the ratio is constant). ``slope`` is the least-squares exponent b of
  log C = a + b·log P over the same models; b ≈ 1 is what makes R a law.
- **Intervals** (`Estimate`), always with what they are over. With two or more replicates R is
  fitted per replicate on the *same* models (those at capacity in every replicate); R is their
  mean and the interval their range. With one replicate the interval spans models, not seeds: a
  95% bootstrap over three or more models at capacity (1000 resamples, fixed seed), the range of
  two; one model has none ("—"). Peak R gets the same treatment: per replicate on the runs every
  replicate made, the range over replicates; one replicate has none.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kcap.experiments.store import ResultsStore, RunRecord

__all__ = [
    "DATA_LIMITED",
    "Estimate",
    "Law",
    "ModelCapacity",
    "Point",
    "analyse",
    "arch_label",
    "count_text",
    "family_label",
    "fit_group",
    "load_points",
    "model_name",
    "number_text",
    "peak_of",
    "points_from_records",
    "ratio_of",
    "scale_label",
]

DATA_LIMITED = 0.9  # a model that stored >= 90% of a dataset's bits was limited by the data
#: Bits that grow by at most 10% when N grows have stopped rising. Seed noise on the lab's probe
#: is ~3% at 300 exposures but ~20% at 100, where one seed may read flat by chance: hence a
#: shape with several seeds must read flat in every one (`_every_seed`).
PLATEAU = 1.1
#: A model that stores less than this share of the most it stored on a smaller dataset (both
#: over-filled) did not reach a limit: it learned the larger data too late (on this CPU a d=16
#: GPT2 stored 1.5k bits of bioD(200) but 13 of bioD(800) after 100 exposures; a d=32 one 19.1k
#: of bioD(3,200) and 10.3k of bioD(6,400), its memorisation beginning at exposure 39 and 62).
#: Models at capacity hold their bits: the band is PLATEAU's, seen from below.
HOLD = 0.9
#: A flat plateau far below what the model stored of a smaller dataset (one it held nearly whole)
#: is learning that collapsed on larger data, not a capacity: it must hold at least this share of
#: the model's most (a d=32 GPT2 at 1000 exposures held 54.8k bits of 93%-stored bioD(800) and a
#: flat 46.5k of bioD(1,600) and (3,200): 85%, a capacity).
COLLAPSE = 0.5
#: Memorisation "begins" at the first in-training measurement holding this share of the most the
#: run ever held (`Point.onset`).
ONSET = 0.1
_SIZE_FIELDS = ("n_layer", "n_head", "d_model", "vocab_size", "context")
# Settings that carry an architecture to the run's head width: part of a model's name (its shape
# string) but not of its architecture, as long as they change nothing at the paper's heads of
# _PAPER_HEAD_DIM dims (`arch_label`). rotary_min_dims 16 is the paper's GPT2 code in narrow heads.
_SCALE_FIELDS = ("rotary_min_dims",)
_PAPER_HEAD_DIM = 64
# Paper names for architecture changes (configs/ablations/, paper §7 and Figure 5).
_ARCH_NAMES: dict[tuple[str, frozenset], str] = {
    ("gpt2", frozenset({("mlp_ratio", 1.0)})): "gpt2-quarter-mlp",
    ("gpt2", frozenset({("mlp_ratio", 0.0)})): "gpt2-no-mlp",
    ("gpt2", frozenset({("rotary_fraction", 1.0)})): "gpt2-full-rotary",  # issue 11's levers
    ("gpt2", frozenset({("bias", False)})): "gpt2-no-bias",
    ("llama", frozenset({("tied", True)})): "llama-tied",
    ("llama", frozenset({("tied", True), ("mlp_gated", False), ("mlp_ratio", 4.0)})): (
        "llama-tied-standard-mlp"
    ),
    (
        "llama",
        frozenset(
            {("tied", True), ("mlp_gated", False), ("mlp_ratio", 4.0), ("activation", "gelu")}
        ),
    ): "llama-tied-standard-mlp-gelu",
    (
        "llama",
        frozenset(
            {
                ("tied", True),
                ("mlp_gated", False),
                ("mlp_ratio", 4.0),
                ("activation", "gelu"),
                ("norm", "layernorm"),
                ("norm_bias", True),
            }
        ),
    ): "llama-tied-standard-mlp-gelu-layernorm-bias",
}


@dataclass(frozen=True)
class Point:
    """One finished run, reduced to what the laws need."""

    run_id: str
    name: str
    family: str
    exposures: int
    arch: str
    model: str  # the model's shape: preset plus size overrides (d_model, ...)
    dataset: str  # the dataset's identity without its seed (kind, variant, N, bioD params)
    n: int
    replicate: tuple[int, int]  # (dataset seed, training seed)
    P: int
    bits: float
    data_bits: float
    recall: float
    components: dict = field(default_factory=dict, hash=False, compare=False)
    data_components: dict = field(default_factory=dict, hash=False, compare=False)
    history: tuple = field(default=(), hash=False, compare=False)
    run_dir: str | None = None
    quant: int | None = None
    hparams: str = ""
    quantizer: str = ""  # how a quantized run was quantized: int4-gptq, int8-rtn-asym, ...
    non_embedding: int | None = None  # parameters outside the embedding and head (if recorded)
    variant: str = ""  # the scale settings that change this model (`scale_variant`)

    @property
    def R(self) -> float:
        return self.bits / self.P

    @property
    def setting(self) -> str:
        """The dataset without its N (a bioD setting is one K, C, D, L, T)."""
        return setting_of(self.dataset)

    @property
    def R_max(self) -> float:
        return self.data_bits / self.P

    @property
    def fraction(self) -> float:
        return self.bits / self.data_bits if self.data_bits else 0.0

    @property
    def onset(self) -> tuple[float, bool] | None:
        """When memorisation began: (exposures seen, whether that is only an upper bound).

        It began by the first in-training measurement that held ``ONSET`` of the most any
        measurement of the run held (the history's last step is the run's end), and after the
        one before it; at the first measurement it is only a bound. None without a history, or
        when the run never held 1% of its data: then nothing began."""
        hist = sorted((h for h in self.history if "bits" in h and "step" in h), key=_step)
        if not hist or not self.data_bits:
            return None
        top = max(h["bits"] for h in hist)
        end = hist[-1]["step"]
        if top < 0.01 * self.data_bits or not end:
            return None
        i = next(i for i, h in enumerate(hist) if h["bits"] >= ONSET * top)
        return hist[i]["step"] / end * self.exposures, i == 0


@dataclass
class ModelCapacity:
    """What one model (shape, replicate) stored on the datasets of one setting."""

    model: str
    replicate: tuple[int, int]
    setting: str
    P: int
    bits: float
    n_at_max: int
    at_capacity: bool
    plateau: bool | None
    datasets: int
    #: why the model is, or is not, at capacity, in words and figures (the report's models table)
    why: str = ""
    #: the best bits stored at each N of the setting
    bits_by_n: dict[int, float] = field(default_factory=dict)
    #: parameters outside the embedding and head, where the run recorded them
    non_embedding: int | None = None
    #: when memorisation began (`Point.onset`) in that best run at each N
    onset_by_n: dict[int, tuple[float, bool] | None] = field(default_factory=dict)

    @property
    def R(self) -> float:
        return self.bits / self.P


def _step(h: dict) -> int:
    return h["step"]


def number_text(x: float) -> str:
    """A figure for the report: 2.31, or ∞ (a ratio over a group that stored nothing)."""
    return "∞" if math.isinf(x) else f"{x:.2f}"


def count_text(n: int, noun: str) -> str:
    """1 model, 3 models."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _rep_key(replicate: tuple[int, int]) -> str:
    return f"{replicate[0]}/{replicate[1]}"


@dataclass(frozen=True)
class Estimate:
    """A figure with its interval and what the interval is over.

    ``per_replicate`` holds the same figure computed on each replicate (dataset seed/training
    seed) on the same models; ``seeds`` is how many replicates the interval spans (0 or 1: the
    interval, if any, spans models, not seeds)."""

    value: float
    interval: tuple[float, float] | None
    over: str
    seeds: int = 1
    per_replicate: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of_replicates(cls, per_replicate: dict[str, float], what: str) -> Estimate:
        """The mean over replicates with their range; one replicate: its value, no interval."""
        vals = list(per_replicate.values())
        if len(vals) == 1:
            return cls(vals[0], None, "one seed", 1, per_replicate)
        over = f"range over {len(vals)} seeds, {what}"
        return cls(float(np.mean(vals)), (min(vals), max(vals)), over, len(vals), per_replicate)

    def text(self) -> str:
        """``1.02 [0.98, 1.05] (range over 3 seeds, ...)``; ``1.02 [—] (one seed)``."""
        iv = "—" if self.interval is None else ", ".join(map(number_text, self.interval))
        return f"{number_text(self.value)} [{iv}] ({self.over})"

    def against(self, low: float, high: float) -> bool | None:
        """True when the interval (the value, without one) lies in [low, high], False when it
        lies wholly outside, None when a bound falls inside it: not distinguishable."""
        lo, hi = self.interval or (self.value, self.value)
        if low <= lo and hi <= high:
            return True
        if hi < low or lo > high:
            return False
        return None


def _div(a: float, b: float) -> float | None:
    """a / b; ∞ when only b is 0; None when both are."""
    if b == 0:
        return math.inf if a > 0 else None
    return a / b


def ratio_of(a: Estimate, b: Estimate) -> Estimate | None:
    """a / b (None when neither is above 0). Its interval: the range of the per-replicate ratios
    where a and b share two or more replicates, else the widest span of the two intervals when
    both are over two or more seeds, else none (one seed: a ratio needs two)."""
    value = _div(a.value, b.value)
    if value is None:
        return None
    shared = sorted(set(a.per_replicate) & set(b.per_replicate))
    if a.seeds >= 2 and b.seeds >= 2 and len(shared) >= 2:
        per = {k: _div(a.per_replicate[k], b.per_replicate[k]) for k in shared}
        per = {k: v for k, v in per.items() if v is not None}
        if len(per) >= 2:
            vals = list(per.values())
            over = f"range over {len(per)} paired seeds"
            return Estimate(value, (min(vals), max(vals)), over, len(per), per)
    if a.seeds >= 2 and b.seeds >= 2 and a.interval and b.interval:
        lo, hi = _div(a.interval[0], b.interval[1]), _div(a.interval[1], b.interval[0])
        if lo is not None and hi is not None:
            over = "unpaired seeds: the widest span of the two ranges"
            return Estimate(value, (lo, hi), over, min(a.seeds, b.seeds))
    over = "one seed" if 1 in (a.seeds, b.seeds) else "seeds not paired on the same models"
    return Estimate(value, None, over, 1)


def peak_of(points: list[Point]) -> Estimate:
    """Peak bits/P of these runs: per replicate over the runs (model, dataset) that every
    replicate made, the mean with the range over replicates; one replicate: its peak."""
    by_rep: dict[tuple, list[Point]] = defaultdict(list)
    for p in points:
        by_rep[p.replicate].append(p)
    if len(by_rep) == 1:
        ((rep, pts),) = by_rep.items()
        peak = max(p.R for p in pts)
        return Estimate(peak, None, "one seed", 1, {_rep_key(rep): peak})
    runs = set.intersection(*({(p.model, p.dataset) for p in v} for v in by_rep.values()))
    if not runs:
        return Estimate(max(p.R for p in points), None, "the seeds ran different models", 0)
    per = {
        _rep_key(rep): max(p.R for p in v if (p.model, p.dataset) in runs)
        for rep, v in sorted(by_rep.items())
    }
    return Estimate.of_replicates(per, f"the same {count_text(len(runs), 'run')} each")


@dataclass
class Law:
    """The capacity law of one (family, exposures, architecture) group."""

    family: str
    exposures: int
    arch: str
    quant: int | None
    points: list[Point]
    models: list[ModelCapacity]
    peak_R: float
    peak_run: str
    peak_per_n: dict[int, float]
    R: float | None
    interval: tuple[float, float] | None
    interval_kind: str | None  # seeds, bootstrap, models (two), single, unpaired; None: no law
    per_replicate: dict[str, float]
    slope: float | None
    interval_over: str = ""  # what the interval is over, in words

    @property
    def key(self) -> tuple[str, int, str, int | None]:
        return (self.family, self.exposures, self.arch, self.quant)

    @property
    def label(self) -> str:
        q = f", int{self.quant}" if self.quant else ""
        return f"{self.family}, {self.exposures} exposures, {self.arch}{q}"

    @property
    def slug(self) -> str:
        q = f"-int{self.quant}" if self.quant else ""
        raw = f"{self.family}-e{self.exposures}-{self.arch}{q}"
        return "".join(c if c.isalnum() or c in "-_" else "-" for c in raw).lower()

    def sizes(self) -> set[str]:
        """The model sizes (`size_of`: the architecture left out) this group ran."""
        return {size_of(p.model) for p in self.points}

    def points_of(self, sizes: set[str] | None = None) -> list[Point]:
        """The runs of models of these sizes (every run by default)."""
        return [p for p in self.points if sizes is None or size_of(p.model) in sizes]

    def peak_estimate(self, ns: set[int] | None = None, sizes: set[str] | None = None) -> Estimate:
        """Peak bits/P over the runs at these N (every N by default) of models of these sizes
        (every size by default), with its interval."""
        return peak_of([p for p in self.points_of(sizes) if ns is None or p.n in ns])

    @property
    def estimate(self) -> Estimate | None:
        """The fitted R with its interval (None without a law)."""
        if self.R is None:
            return None
        figures = (self.interval, self.interval_kind, self.interval_over, self.per_replicate)
        return _law_estimate(self.R, *figures)

    def capacity_sizes(self) -> set[tuple[str, str]]:
        """(size, data setting) of every model at capacity, the architecture left out
        (`size_of`): what two groups' laws can be paired on."""
        return {(size_of(m.model), m.setting) for m in self.models if m.at_capacity}

    def estimate_on(self, sizes: set[tuple[str, str]]) -> Estimate | None:
        """The law's R fitted on its models at capacity of these sizes only (None if it has
        none of them)."""
        cap = [m for m in self.models if m.at_capacity and (size_of(m.model), m.setting) in sizes]
        if not cap:
            return None
        return _law_estimate(*_law_ratio(cap))

    def open_ns(
        self, data_limited: float = DATA_LIMITED, sizes: set[str] | None = None
    ) -> set[int]:
        """The N where no replicate's best run (highest bits/P) of models of these sizes (every
        size by default) stored ``data_limited`` of the data or more: only there does a peak
        measure the models rather than the data's size."""
        best: dict[tuple, Point] = {}
        for p in self.points_of(sizes):
            key = (p.n, p.replicate)
            if key not in best or p.R > best[key].R:
                best[key] = p
        closed = {n for (n, _), p in best.items() if p.fraction >= data_limited}
        return {n for n, _ in best} - closed

    @property
    def variants(self) -> list[str]:
        """The scale settings its runs' models were built with (`scale_variant`; "" for none).
        More than one: the group mixes recipe versions, and its law is not one recipe's."""
        return sorted({p.variant for p in self.points})

    @property
    def quantizers(self) -> list[str]:
        """How the runs that count were quantized (int4-gptq, int4-rtn-asym, ...)."""
        return sorted({p.quantizer for p in self.points if p.quantizer})

    @property
    def n_at_capacity(self) -> int:
        return sum(m.at_capacity for m in self.models)

    @property
    def scale(self) -> str:
        return scale_label(self.points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "exposures": self.exposures,
            "arch": self.arch,
            "quant": self.quant,
            "runs": len(self.points),
            "models": len(self.models),
            "models_at_capacity": self.n_at_capacity,
            "peak_R": self.peak_R,
            "peak_run": self.peak_run,
            "peak_R_per_N": {str(k): v for k, v in self.peak_per_n.items()},
            "R": self.R,
            "interval": list(self.interval) if self.interval else None,
            "interval_kind": self.interval_kind,
            "interval_over": self.interval_over,
            "quantizers": self.quantizers,
            "R_per_replicate": self.per_replicate,
            "slope": self.slope,
            "scale": self.scale,
            "variants": self.variants,
        }


# ------------------------------------------------------------------------------ labels


def arch_label(preset_name: str, overrides: dict | None = None) -> str:
    """The architecture of a model spec, without its size: gpt2, llama-tied, gpt2-no-mlp, ..."""
    from kcap.models import preset

    overrides = dict(overrides or {})
    family = preset_name.split("-")[0]
    moe = preset_name.split("-moe")[1] if "-moe" in preset_name else None
    base = family + (f"-moe{moe}" if moe else "")
    size = {k: v for k, v in overrides.items() if k in _SIZE_FIELDS}
    try:
        full = preset(preset_name, 1024, **overrides).model_dump()
        ref = preset(preset_name, 1024, **size).model_dump()
    except ValueError:
        return base + "[invalid]"
    diff = {k: v for k, v in full.items() if ref[k] != v and k not in _SIZE_FIELDS}
    if "rotary_min_dims" in diff and _rotates_as_paper(preset_name, overrides, full["n_head"]):
        del diff["rotary_min_dims"]
    if not diff:
        return base
    items = frozenset(
        (k, float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
        for k, v in diff.items()
    )
    if not moe and (family, items) in _ARCH_NAMES:
        return _ARCH_NAMES[(family, items)]
    return base + "[" + ",".join(f"{k}={v}" for k, v in sorted(diff.items())) + "]"


def _rotates_as_paper(preset_name: str, overrides: dict, n_head: int) -> bool:
    """Whether a model of ``n_head`` heads rotates as many dims per head as it would without
    `rotary_min_dims` at the paper's head width: then the floor only carries the architecture to
    narrower heads."""
    from kcap.models import preset

    wide = overrides | {"d_model": _PAPER_HEAD_DIM * n_head}
    floorless = {k: v for k, v in wide.items() if k != "rotary_min_dims"}
    return preset(preset_name, 1024, **wide).rotary_dims == (
        preset(preset_name, 1024, **floorless).rotary_dims
    )


def model_name(model: dict) -> str:
    """A model's shape: its preset plus the size and scale overrides (``gpt2-2-2,d_model=24``,
    ``gpt2-2-2,d_model=24,rotary_min_dims=16``), without the architecture's own overrides."""
    overrides = model.get("overrides") or {}
    shape = {k: overrides[k] for k in sorted(overrides) if k in _SIZE_FIELDS + _SCALE_FIELDS}
    return model.get("preset", "?") + "".join(f",{k}={v}" for k, v in shape.items())


def scale_variant(preset_name: str, overrides: dict | None = None) -> str:
    """The scale settings (`_SCALE_FIELDS`) that change this model, as ``k=v`` joined by commas;
    "" when it is built as it would be without them (``rotary_min_dims=16`` in a 12-dim head,
    "" in a 64-dim one). Models of one law must agree on it: a store that mixes recipe versions
    (v2 and v3 at lab widths) would otherwise read two recipes as one law (`Law.variants`)."""
    from kcap.models import preset

    overrides = dict(overrides or {})
    bare = {k: v for k, v in overrides.items() if k not in _SCALE_FIELDS}
    try:
        model, without = preset(preset_name, 1024, **overrides), preset(preset_name, 1024, **bare)
    except ValueError:
        return ""
    if model.rotary_dims == without.rotary_dims:  # what rotary_min_dims changes
        return ""
    return ",".join(f"{k}={overrides[k]}" for k in sorted(overrides) if k in _SCALE_FIELDS)


def family_label(dataset: dict) -> str:
    """bioS, bioS-simple, bioS-fullname, bioD, bioR, random-strings, or a junk mixture such as
    bioS+random-junk-7:1 or bioD+repetitive-junk-7:1 (named by its useful data; +domain-token
    when the useful data carries one, +junk-token when the junk does)."""
    kind = dataset.get("kind", "bios")
    if kind == "biod":
        return "bioD"
    if kind == "bior":
        return "bioR"
    if kind == "random":
        return "random-strings"
    if kind == "junk":
        useful = {"bios": "bioS", "biod": "bioD"}.get(dataset.get("useful") or "bios", "?")
        name = f"{useful}+{dataset.get('junk', 'random')}-junk-{dataset.get('ratio', '?')}:1"
        domain = dataset.get("domain") or "none"
        return name + {"none": "", "useful": "+domain-token", "junk": "+junk-token"}.get(
            domain, f"+{domain}"
        )
    if kind == "bios":
        variant = dataset.get("variant", "online")
        return "bioS" if variant == "online" else f"bioS-{variant}"
    return str(kind)


def scale_label(points: list[Point]) -> str:
    """lab / gpu / paper, from the sizes actually run (the numbers are always shown beside it)."""
    if not points:
        return "-"
    max_p = max(p.P for p in points)
    max_n = max(p.n for p in points)
    if max_n >= 100_000 or max_p >= 20_000_000:
        return "paper"
    if max_p <= 250_000 and max_n <= 10_000:
        return "lab"
    return "gpu"


def describe_scale(points: list[Point]) -> str:
    """e.g. "lab: N 100–800, P 17k–48k, 12 runs"."""
    if not points:
        return "-"
    ns = sorted({p.n for p in points})
    ps = [p.P for p in points]
    n_text = f"N {_si(ns[0])}" + (f"–{_si(ns[-1])}" if len(ns) > 1 else "")
    p_text = f"P {_si(min(ps))}" + (f"–{_si(max(ps))}" if max(ps) != min(ps) else "")
    return f"{scale_label(points)}: {n_text}, {p_text}, {len(points)} runs"


def _si(x: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


# ------------------------------------------------------------------------------ points


def people_of(rec: RunRecord) -> int:
    """N of a run's dataset: as measured, else as its manifest or config says (0 if none)."""
    dparams = (rec.manifest or {}).get("params") or {}
    d = rec.config.get("dataset", {})
    return int(rec.metrics.get("n_people") or dparams.get("n") or d.get("n") or 0)


def dataset_label(rec: RunRecord) -> str:
    """What a run trained on, as the analysis tells datasets apart: the family, N and whatever
    else makes other data (bioD's K, C, D, L, T, a cut name pool, another tokenizer, the
    population of repetitive junk), e.g. ``bioD n=800 k=8 c=1 d=128 l=1 t=128``."""
    d = rec.config.get("dataset", {})
    dparams = (rec.manifest or {}).get("params") or {}
    ident = [family_label(d), f"n={people_of(rec)}"]
    if d.get("kind") == "biod" or d.get("useful") == "biod":
        ident += [f"{k}={d.get(k, dparams.get(k))}" for k in "kcdlt"]
    if d.get("name_pool"):  # cut name pools: other names, other data
        ident.append(f"name_pool={d['name_pool']}")
    if d.get("tokenizer", "bpe") != "bpe":  # the same people in other tokens
        ident.append(f"tokenizer={d['tokenizer']}")
    if d.get("junk_n"):  # repetitive junk of another population: other data, never merged
        ident.append(f"junk_n={d['junk_n']}")
    return " ".join(ident)


def setting_of(dataset: str) -> str:
    """A `dataset_label` without its N: the *setting* whose datasets a capacity is read over."""
    return " ".join(t for t in dataset.split() if not t.startswith("n="))


def points_from_records(records: list[RunRecord]) -> list[Point]:
    """Points of the finished runs that carry a measurement."""
    out = []
    for rec in records:
        if rec.status != "finished" or "bits" not in rec.metrics:
            continue
        cfg, m = rec.config, rec.metrics
        d, model, t = cfg.get("dataset", {}), cfg.get("model", {}), cfg.get("training", {})
        overrides = model.get("overrides") or {}
        quantize = cfg.get("quantize") if isinstance(cfg.get("quantize"), dict) else None
        out.append(
            Point(
                run_id=rec.run_id,
                name=rec.name or rec.run_id,
                family=family_label(d),
                exposures=int(t.get("exposures", 0)),
                arch=arch_label(model.get("preset", "gpt2-2-2"), overrides),
                model=model_name(model),
                dataset=dataset_label(rec),
                n=people_of(rec),
                replicate=(int(d.get("seed", 0)), int(t.get("seed", 0))),
                P=int(m["P"]),
                bits=float(m["bits"]["total"]),
                data_bits=float(m["data_bits"]),
                recall=float(m.get("recall_accuracy", float("nan"))),
                components={k: float(v) for k, v in m["bits"].items()},
                data_components=dict((rec.manifest or {}).get("bits") or {}),
                history=tuple(m.get("history") or history_file(rec.run_dir)),
                run_dir=rec.run_dir,
                quant=quantize.get("bits") if quantize else None,
                hparams=", ".join(
                    f"{k}={t.get(k)}" for k in ("lr", "batch_size", "weight_decay") if k in t
                ),
                quantizer=_quantizer(quantize, model.get("preset", "")),
                non_embedding=(rec.params or {}).get("non_embedding"),
                variant=scale_variant(model.get("preset", "gpt2-2-2"), overrides),
            )
        )
    return out


def _quantizer(quantize: dict | None, preset_name: str) -> str:
    """The quantizer's label of a recorded ``quantize`` entry ("" for none). Entries recorded
    before MoE experts were labelled still had them rounded by RTN under GPTQ."""
    if not quantize:
        return ""
    from kcap.models.quantize import quant_label_of

    if "-moe" in preset_name and quantize.get("method", "gptq") == "gptq":
        quantize = {"experts": "rtn", **quantize}
    return quant_label_of(quantize)


def history_file(run_dir: str | Path | None) -> tuple:
    """In-training measurements from RUN_DIR/metrics.jsonl (runs recorded by `kcap train`)."""
    path = Path(run_dir) / "metrics.jsonl" if run_dir else None
    if path is None or not path.is_file():
        return ()
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "measure" in rec:
            out.append({"step": rec["step"], **rec["measure"]})
    return tuple(out)


def load_points(db: str | Path) -> list[Point]:
    """Points of every finished run in the results store at ``db`` (none if it doesn't exist)."""
    if not Path(db).is_file():
        return []
    with ResultsStore(db) as store:
        return points_from_records(store.list_runs(status="finished"))


# ------------------------------------------------------------------------------ fitting


def analyse(points: list[Point], *, data_limited: float = DATA_LIMITED) -> list[Law]:
    """One `Law` per (family, exposures, architecture, quantization) group, sorted."""
    groups: dict[tuple, list[Point]] = defaultdict(list)
    for p in points:
        groups[(p.family, p.exposures, p.arch, p.quant)].append(p)
    laws = [fit_group(g, data_limited=data_limited) for g in groups.values()]
    return sorted(laws, key=lambda law: (law.family, -law.exposures, law.arch, law.quant or 0))


def best_of(points: list[Point]) -> list[Point]:
    """Merge runs that differ only in optimisation settings, keeping the one storing most bits."""
    best: dict[tuple, Point] = {}
    for p in points:
        key = (p.model, p.dataset, p.replicate)
        if key not in best or p.bits > best[key].bits:
            best[key] = p
    return list(best.values())


def fit_group(points: list[Point], *, data_limited: float = DATA_LIMITED) -> Law:
    """Peak R, per-model capacities and the fitted law of one group of points."""
    if not points:
        raise ValueError("fit_group needs at least one point")
    first = points[0]
    pts = best_of(points)
    peak = max(pts, key=lambda p: p.R)
    peak_per_n: dict[int, float] = {}
    for p in pts:
        peak_per_n[p.n] = max(peak_per_n.get(p.n, 0.0), p.R)
    models = _capacities(pts, data_limited)
    law_r, interval, kind, over, per_rep, slope = _law(models)
    return Law(
        family=first.family,
        exposures=first.exposures,
        arch=first.arch,
        quant=first.quant,
        points=pts,
        models=models,
        peak_R=peak.R,
        peak_run=peak.name,
        peak_per_n=dict(sorted(peak_per_n.items())),
        R=law_r,
        interval=interval,
        interval_kind=kind,
        per_replicate=per_rep,
        slope=slope,
        interval_over=over,
    )


def _capacities(points: list[Point], data_limited: float) -> list[ModelCapacity]:
    """Each model's capacity on each dataset setting it was trained on (module docstring).

    ``points`` hold one run per model, replicate and dataset (`best_of`), so one per N here."""
    by_model: dict[tuple, list[Point]] = defaultdict(list)
    for p in points:
        by_model[(p.model, p.replicate, p.setting)].append(p)
    out = []
    for (model, replicate, setting), pts in sorted(by_model.items()):
        top = max(pts, key=lambda p: p.bits)
        plateau, why = _plateau(pts, top, data_limited)
        # At capacity: it stored something, was shown more than it stored, and showing it more
        # did not move what it stored. Storing less than one dataset is no evidence: under-
        # trained models do that too (on this CPU a d=16 GPT2 stored 2% of bioS(100) after
        # 1000 exposures), so a model seen at a single N (or with bits still rising) gives no law.
        shown_more = any(p.data_bits * data_limited > top.bits for p in pts)
        if top.bits <= 0:
            why = "stored nothing"
        elif not shown_more:
            why = f"stored >= {data_limited:.0%} of every dataset: limited by the data"
        by_n = sorted(pts, key=lambda p: p.n)  # one point per N: `best_of` kept the best run
        out.append(
            ModelCapacity(
                model=model,
                replicate=replicate,
                setting=setting,
                P=top.P,
                bits=top.bits,
                n_at_max=top.n,
                at_capacity=top.bits > 0 and shown_more and plateau is True,
                plateau=plateau,
                datasets=len(pts),
                why=why,
                non_embedding=top.non_embedding,
                bits_by_n={p.n: p.bits for p in by_n},
                onset_by_n={p.n: p.onset for p in by_n},
            )
        )
    return _every_seed(out)


def _every_seed(models: list[ModelCapacity]) -> list[ModelCapacity]:
    """A model run with several seeds is at capacity only where every seed that ran it is.

    One seed's flat bits can be noise on a learning curve: at 100 exposures on the lab's probe,
    three seeds of one d-32 model stored 9.2k-13.7k bits of N = 400 and 12.7k-15.8k of N = 800,
    and only the seed that happened to store most of N = 400 read flat. The others' rows say
    why they are not at capacity; the flat one says it was outvoted.

    A seed votes only where it could read a plateau (over-filled at two or more N): a seed run
    at one N, as result 8's extra seeds are, can neither confirm nor deny one, and does not
    take the model out of the law; the flat seed's row names the seeds that did not vote."""
    by_model: dict[tuple, list[ModelCapacity]] = defaultdict(list)
    for m in models:
        by_model[(m.model, m.setting)].append(m)
    for group in by_model.values():
        voters = [m for m in group if m.plateau is not None]
        not_at = [_rep_key(m.replicate) for m in voters if not m.at_capacity]
        silent = [_rep_key(m.replicate) for m in group if m.plateau is None]
        if len(not_at) == len(voters):
            continue
        for m in group:
            if not m.at_capacity:
                continue
            if not_at:
                seeds = ", ".join(not_at)
                m.at_capacity = False
                m.why += f"; but not in every seed (not at capacity in seed {seeds}): not counted"
            elif silent:
                m.why += f" (seed {', '.join(silent)}: no plateau to read, no vote)"
    return models


def _plateau(points: list[Point], most: Point, data_limited: float) -> tuple[bool | None, str]:
    """Whether one model's bits stopped moving with N on one setting, and why (or why not).

    Read on the datasets the model was over-filled with (it stored less than ``data_limited``
    of them; one best run per N): the largest against the most stored on any smaller one.
    Within 10% of it both ways is a plateau, unless it lies below ``COLLAPSE`` of the model's
    ``most`` (a collapse); more is bits still rising, less is bits falling on larger data (a
    learning limit). None: fewer than two such N."""
    over = sorted(((p.n, p) for p in points if p.fraction < data_limited), key=lambda i: i[0])
    if len(over) < 2:
        where = "no N" if not over else f"one N only ({over[0][0]:,})"
        return None, f"over-filled at {where}: no plateau to read"
    *smaller, (n1, top) = over
    n0, prev = max(smaller, key=lambda item: item[1].bits)
    before, last = prev.bits, top.bits
    against = f"the most on a smaller over-filled N (N = {n0:,})"
    if last > before * PLATEAU:
        rise = "more than nothing" if before <= 0 else f"{last / before - 1:+.0%} over"
        return False, f"bits still rising: N = {n1:,} held {rise} {against}"
    if last < before * HOLD:
        return False, (
            f"bits fell: N = {n1:,} held {last / before:.0%} of {against}: "
            "a learning limit, not a capacity"
        )
    if last < COLLAPSE * most.bits:
        return False, (
            f"bits collapsed: the over-filled N hold {last / most.bits:.0%} of what it stored of "
            f"N = {most.n:,}: a learning limit, not a capacity"
        )
    return True, f"at capacity: N = {n1:,} held within {PLATEAU - 1:.0%} of {against}"


def size_of(model: str) -> str:
    """A model's size without its architecture: the preset's layer and head counts and the size
    overrides (``gpt2-2-2,d_model=24``, ``llama-2-2,d_model=24`` and ``gpt2-2-2-moe32,d_model=24``
    are all ``2-2,d_model=24``)."""
    preset_name, sep, size = model.partition(",")
    dims = [t for t in preset_name.split("-")[1:] if not t.startswith("moe")]
    return "-".join(dims) + sep + size


def _law_estimate(r, interval, kind, over, per_replicate) -> Estimate:
    """An `Estimate` of a law's R from `_law_ratio`'s figures."""
    seeds = {"seeds": len(per_replicate), "unpaired": 0}.get(kind, 1)
    return Estimate(r, interval, over, seeds, per_replicate)


def _law(models: list[ModelCapacity]):
    """(R, interval, interval kind, what the interval is over, per-replicate R, slope)."""
    cap = [m for m in models if m.at_capacity]
    if not cap:
        return None, None, None, "", {}, None
    slope = None
    stored = [m for m in cap if m.bits > 0]  # log-log needs bits > 0
    if len({m.P for m in stored}) >= 2:
        sizes = np.log([m.P for m in stored])
        slope = float(np.polyfit(sizes, np.log([m.bits for m in stored]), 1)[0])
    return (*_law_ratio(cap), slope)


def _law_ratio(cap: list[ModelCapacity]):
    """R over the models at capacity, paired across replicates on the same models."""
    by_rep: dict[tuple, dict[tuple, float]] = defaultdict(dict)
    for m in cap:
        by_rep[m.replicate][(m.model, m.setting)] = m.R
    ratios = np.array([m.R for m in cap])
    if len(by_rep) >= 2:
        same = set.intersection(*(set(v) for v in by_rep.values()))
        if not same:
            over = "no model at capacity in every seed"
            return float(np.median(ratios)), None, "unpaired", over, {}
        per_rep = {
            _rep_key(rep): float(np.median([v[k] for k in same]))
            for rep, v in sorted(by_rep.items())
        }
        est = Estimate.of_replicates(per_rep, f"the same {count_text(len(same), 'model')} each")
        return est.value, est.interval, "seeds", est.over, per_rep
    ((rep, _),) = by_rep.items()
    r = float(np.median(ratios))
    per_rep = {_rep_key(rep): r}
    if len(ratios) >= 3:
        rng = np.random.default_rng(0)
        boots = np.median(rng.choice(ratios, size=(1000, len(ratios)), replace=True), axis=1)
        lo, hi = np.percentile(boots, [2.5, 97.5])
        over = f"95% bootstrap over {len(ratios)} models (not seeds), one seed"
        return r, (float(lo), float(hi)), "bootstrap", over, per_rep
    if len(ratios) == 2:
        interval = (float(ratios.min()), float(ratios.max()))
        return r, interval, "models", "range over 2 models, one seed", per_rep
    return r, None, "single", "one model, one seed", per_rep


def find(
    laws: list[Law],
    *,
    family: str | None = None,
    exposures: int | None = None,
    arch: str | None = None,
    quant: int | None = None,
) -> Law | None:
    """The law matching every given field (quant None matches unquantized only)."""
    for law in laws:
        if family is not None and law.family != family:
            continue
        if exposures is not None and law.exposures != exposures:
            continue
        if arch is not None and law.arch != arch:
            continue
        if law.quant != quant:
            continue
        return law
    return None


def capacity_of(law: Law | None) -> tuple[float | None, str]:
    """The law's R when fitted, else its peak R (a lower bound); and which one it is."""
    if law is None:
        return None, "none"
    if law.R is not None:
        return law.R, "law"
    return law.peak_R, "peak"


def isfinite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)
