"""Seed spread of a lab comparison as a Markdown table: per model and N, R over the seeds.

Reads the CSV of `kcap runs --csv` and keeps the runs at one exposure count (optionally one
width, dataset family and dataset setting); rows are models (architecture and width, and the
dataset setting where the kept runs hold more than one), columns the N they ran at, and each cell
the mean R over the seeds with its range (min-max) and the number of seeds. A cell never counts
one seed twice: two runs of one model, N and seed differ in something else, and the table stops
with their run ids. A model whose range overlaps the baseline's at every N is not
distinguishable from it there.

    python benchmarks/seed_table.py results/lab/recipes-v2/runs.csv --exposures 100 --d-model 32 \
        --family bioD --dataset "k=8 c=1"
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path


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
) -> str:
    """The Markdown table (module docstring) of ``rows`` (dicts of `kcap runs --csv`);
    ``dataset`` keeps the runs whose `dataset_setting` contains it."""
    kept = []
    for r in rows:
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
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)  # R of each seed
    seen: dict[tuple[str, int, str], str] = {}  # (model, N, seed) -> run id
    params: dict[str, list[int]] = defaultdict(list)
    for r in kept:
        model = f"{r['arch']} d {r['d_model']}"
        if several:
            model += f" ({dataset_setting(r)})"
        key = (model, int(r["N"]), str(r["seed"]))
        if key in seen:
            raise ValueError(
                f"runs {seen[key]} and {r.get('run_id')} are both {model}, N = {r['N']}, seed "
                f"{r['seed']}: they differ in something else, so they are not seeds of one run"
            )
        seen[key] = r.get("run_id", "?")
        cells[(model, int(r["N"]))].append(float(r["R"]))
        params[model].append(int(r["P"]))
    ns = sorted({n for _, n in cells})
    models = sorted({m for m, _ in cells}, key=lambda m: (not m.startswith("gpt2 "), m))
    head = ["model", "P", *(f"R at N = {n:,} (seeds)" for n in ns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        out = [m, f"{min(params[m]):,}-{max(params[m]):,}"]
        for n in ns:
            rs = cells.get((m, n), [])
            if not rs:
                out.append("—")
                continue
            span = f" [{min(rs):.2f}, {max(rs):.2f}]" if len(rs) > 1 else ""
            out.append(f"{statistics.mean(rs):.2f}{span} ({len(rs)})")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("--exposures", type=int, required=True)
    ap.add_argument("--d-model", type=int)
    ap.add_argument("--family")
    ap.add_argument(
        "--dataset", help='keep the runs whose dataset setting contains this (e.g. "k=8 c=1")'
    )
    a = ap.parse_args()
    with a.csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        print(seed_table(rows, a.exposures, a.d_model, a.family, a.dataset))
    except ValueError as e:
        raise SystemExit(f"seed_table: {e}") from None


if __name__ == "__main__":
    main()
