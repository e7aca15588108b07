"""Seed spread of a lab comparison as a Markdown table: per model and N, R over the seeds.

Reads the CSV of `kcap runs --csv` and keeps the runs at one exposure count (optionally one
width and dataset family); rows are models (architecture and width), columns the N they ran at,
and each cell the mean R over the seeds with its range (min-max) and the number of seeds. A
model whose range overlaps the baseline's at every N is not distinguishable from it there.

    python benchmarks/seed_table.py results/lab/recipes-v2/runs.csv --exposures 100 --d-model 32 \
        --family bioD
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path


def seed_table(
    rows: list[dict], exposures: int, d_model: int | None = None, family: str | None = None
) -> str:
    """The Markdown table (module docstring) of ``rows`` (dicts of `kcap runs --csv`)."""
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)  # R of each seed
    params: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        if int(r["exposures"]) != exposures or r["quantize"]:
            continue
        if d_model is not None and int(r["d_model"]) != d_model:
            continue
        if family is not None and r["family"] != family:
            continue
        model = f"{r['arch']} d {r['d_model']}"
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
    a = ap.parse_args()
    with a.csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    print(seed_table(rows, a.exposures, a.d_model, a.family))


if __name__ == "__main__":
    main()
