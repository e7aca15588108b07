"""One-lever-at-a-time ablations as a Markdown table, read against the baseline's seed spread.

Reads the CSV of `kcap runs --csv` (one row per finished run). The baseline is the setting every
lever starts from: per knob, the value most rows share. Rows that differ from it in no knob but
the seed are the baseline's seeds; every other row is labelled by the knobs it changes. Each
row's bits and R are compared with the baseline's seeds: an effect inside their range (min to
max) is "not distinguishable", otherwise it is the change against their mean, in percent.

    python benchmarks/ablation_table.py results/lab/ablations.csv > table.md
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import Counter
from pathlib import Path

#: Knobs an ablation may turn (CSV columns); the seed is the baseline's spread, not a lever.
KNOBS = (
    "preset",
    "d_model",
    "vocab",
    "tokenizer",
    "name_pool",
    "lr",
    "schedule",
    "min_lr_ratio",
    "decay_fraction",
    "warmup_steps",
    "weight_decay",
    "init_std",
    "batch_size",
    "window",
    "N",
    "exposures",
)


def _num(x: str) -> float:
    return float(x) if x not in ("", None) else float("nan")


def baseline_of(rows: list[dict]) -> dict[str, str]:
    """Per knob, the value most rows share (ties: the first met)."""
    return {k: Counter(r.get(k, "") for r in rows).most_common(1)[0][0] for k in KNOBS}


def lever(row: dict, base: dict[str, str]) -> str:
    """The knobs ``row`` changes against the baseline, as ``knob=value`` ("" for none)."""
    return ", ".join(
        f"{k}={row.get(k, '') or 'default'}" for k in KNOBS if row.get(k, "") != base[k]
    )


def verdict(value: float, seeds: list[float]) -> str:
    """``value`` against the baseline seeds: inside their range, or the change on their mean."""
    if len(seeds) < 2:
        return "no spread (fewer than 2 seeds)"
    if min(seeds) <= value <= max(seeds):
        return "not distinguishable"
    mean = statistics.fmean(seeds)
    return f"{100 * (value - mean) / mean:+.0f}%"


def table(rows: list[dict]) -> str:
    base = baseline_of(rows)
    seeds = [r for r in rows if not lever(r, base)]
    others = sorted((r for r in rows if lever(r, base)), key=lambda r: lever(r, base))
    r_seeds = [_num(r["R"]) for r in seeds]
    head = (
        "| lever | P | non-embedding P | bits stored | R | R per non-embedding param "
        "| recall | steps | train time | R vs the baseline's seeds |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def line(label: str, r: dict, note: str) -> str:
        return (
            f"| {label} | {int(_num(r['P'])):,} | {int(_num(r['non_embedding'])):,} "
            f"| {int(_num(r['bits_stored'])):,} | {_num(r['R']):.3f} "
            f"| {_num(r['R_non_embedding']):.3f} | {100 * _num(r['recall_accuracy']):.1f}% "
            f"| {int(_num(r['steps'])):,} | {_num(r['train_s']) / 60:.0f} min | {note} |\n"
        )

    out = [head]
    for r in sorted(seeds, key=lambda r: r.get("seed", "")):
        out.append(line(f"baseline, seed {r.get('seed', '?')}", r, "(baseline)"))
    if r_seeds:
        mean = statistics.fmean(r_seeds)
        spread = f"{min(r_seeds):.3f}-{max(r_seeds):.3f}"
        out.append(
            f"| **baseline mean** ({len(r_seeds)} seeds) | | | | **{mean:.3f}** "
            f"| | | | | range {spread} |\n"
        )
    for r in others:
        out.append(line(lever(r, base), r, verdict(_num(r["R"]), r_seeds)))
    knobs = ", ".join(f"{k} {v or 'default'}" for k, v in base.items())
    return f"Baseline: {knobs}.\n\n" + "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", type=Path, help="a `kcap runs --csv` file")
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{args.csv}: no finished runs")
    sys.stdout.write(table(rows))


if __name__ == "__main__":
    main()
