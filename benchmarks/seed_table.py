"""Seed spread of a lab comparison as a Markdown table: per model and N, R over the seeds.

Reads the CSV of `kcap runs --csv` and keeps the runs at one exposure count (optionally one
width, dataset family and dataset setting); rows are models (architecture and width, and the
dataset setting where the kept runs hold more than one), columns the N they ran at, and each cell
the mean R over the seeds with its range (min-max) and the number of seeds. A cell never counts
one seed twice: two runs of one model, N and seed differ in something else, and the table stops
with their run ids (a run listed in two CSVs counts once). A model whose range overlaps the
baseline's at every N is not distinguishable from it there.

With ``--baseline ARCH`` a last column compares each model with that architecture at its width
and setting, as the report's verdicts do: baseline / model of the peak R, each seed's peak over the
N that both ran with every seed they share, the ratio of the mean peaks with the range of the
per-seed ratios (`kcap.experiments.analysis.ratio_of`).

    python benchmarks/seed_table.py results/lab/recipes-v2/runs.csv --exposures 100 --d-model 32 \
        --family bioD --dataset "k=8 c=1"
    python benchmarks/seed_table.py results/lab/recipes-v2/runs.csv \
        results/lab/gpt2-levers/runs.csv --exposures 1000 --d-model 24 --family bioD \
        --dataset "k=8 c=1" --baseline gpt2
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

from kcap.experiments.analysis import Estimate, ratio_of


def dataset_setting(row: dict) -> str:
    """The dataset a run trained on, without its N: the CSV's ``setting`` column (the analysis's
    label, e.g. ``bioD k=8 c=1 d=128 l=1 t=128``; bioD's settings with one family and data bits
    can differ: K 8 C 1 and K 4 C 2 hold the same bits)."""
    if not row.get("setting"):
        raise ValueError(
            f"run {row.get('run_id', '?')} has no dataset setting: the CSV predates the column; "
            "write it again with `kcap runs --csv`"
        )
    return row["setting"]


def seed_table(
    rows: list[dict],
    exposures: int,
    d_model: int | None = None,
    family: str | None = None,
    dataset: str | None = None,
    baseline: str | None = None,
) -> str:
    """The Markdown table (module docstring) of ``rows`` (dicts of `kcap runs --csv`);
    ``dataset`` keeps the runs whose `dataset_setting` contains it; ``baseline`` (an ``arch``)
    adds the paired peak ratio column."""
    kept, ids = [], set()
    for r in rows:
        if r.get("run_id") and r["run_id"] in ids:
            continue  # one run listed in two CSVs
        ids.add(r.get("run_id"))
        if int(r["exposures"]) != exposures or r["quantize"]:
            continue
        if d_model is not None and int(r["d_model"]) != d_model:
            continue
        if family is not None and r["family"] != family:
            continue
        if dataset is not None and dataset not in dataset_setting(r):
            continue
        kept.append(r)
    several = len({dataset_setting(r) for r in kept}) > 1
    seen: dict[tuple[str, int, str], str] = {}  # (model, N, seed) -> run id
    params: dict[str, list[int]] = defaultdict(list)
    by_seed: dict[str, dict[str, dict[int, float]]] = defaultdict(dict)  # model -> seed -> N -> R
    base_of: dict[str, str] = {}  # model -> its baseline's model name
    for r in kept:
        suffix = f" d {r['d_model']}" + (f" ({dataset_setting(r)})" if several else "")
        model = r["arch"] + suffix
        base_of[model] = f"{baseline}{suffix}"
        key = (model, int(r["N"]), str(r["seed"]))
        if key in seen:
            raise ValueError(
                f"runs {seen[key]} and {r.get('run_id')} are both {model}, N = {r['N']}, seed "
                f"{r['seed']}: they differ in something else, so they are not seeds of one run"
            )
        seen[key] = r.get("run_id", "?")
        by_seed[model].setdefault(str(r["seed"]), {})[int(r["N"])] = float(r["R"])
        params[model].append(int(r["P"]))
    ns = sorted({n for seeds in by_seed.values() for runs in seeds.values() for n in runs})
    models = sorted(by_seed, key=lambda m: (not m.startswith("gpt2 "), m))
    head = ["model", "P", *(f"R at N = {n:,} (seeds)" for n in ns)]
    if baseline:
        head.append(f"{baseline} / it (peak, paired seeds)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        out = [m, f"{min(params[m]):,}-{max(params[m]):,}"]
        for n in ns:
            rs = [runs[n] for runs in by_seed[m].values() if n in runs]
            if not rs:
                out.append("—")
                continue
            span = f" [{min(rs):.2f}, {max(rs):.2f}]" if len(rs) > 1 else ""
            out.append(f"{statistics.mean(rs):.2f}{span} ({len(rs)})")
        if baseline:
            base = base_of[m]
            est = None if base == m else paired_peak_ratio(by_seed.get(base, {}), by_seed[m])
            out.append("—" if est is None else _estimate_cell(est))
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def paired_peak_ratio(
    base: dict[str, dict[int, float]], model: dict[str, dict[int, float]]
) -> Estimate | None:
    """baseline / model of the peak R (seed -> N -> R each): over the seeds both ran, each
    seed's peak over the N that both ran with every one of those seeds; None when they share no
    seed or no N."""
    seeds = sorted(set(base) & set(model))
    ns = set.intersection(*(set(base[s]) & set(model[s]) for s in seeds)) if seeds else set()
    if not ns:
        return None
    peaks = [
        Estimate.of_replicates({s: max(runs[s][n] for n in ns) for s in seeds}, "paired")
        for runs in (base, model)
    ]
    return ratio_of(*peaks)


def _estimate_cell(est: Estimate) -> str:
    """``0.61 [0.57, 0.67] (3)``; one seed: ``0.61 (1)``."""
    span = f" [{est.interval[0]:.2f}, {est.interval[1]:.2f}]" if est.interval else ""
    return f"{est.value:.2f}{span} ({est.seeds})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path, nargs="+", help="CSVs of `kcap runs --csv`, read as one")
    ap.add_argument("--exposures", type=int, required=True)
    ap.add_argument("--d-model", type=int)
    ap.add_argument("--family")
    ap.add_argument(
        "--dataset", help='keep the runs whose dataset setting contains this (e.g. "k=8 c=1")'
    )
    ap.add_argument("--baseline", help="add baseline / model of the peak R (e.g. gpt2)")
    a = ap.parse_args()
    rows = []
    for path in a.csv:
        with path.open(newline="") as f:
            rows += list(csv.DictReader(f))
    try:
        print(seed_table(rows, a.exposures, a.d_model, a.family, a.dataset, a.baseline))
    except ValueError as e:
        raise SystemExit(f"seed_table: {e}") from None


if __name__ == "__main__":
    main()
