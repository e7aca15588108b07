"""A recipe swept twice, one run at a time and packed (`kcap sweep --pack K`): rows and time.

Reads the two stores' `kcap runs --csv` files and, optionally, the two sweeps' logs (their last
line gives the sweep's wall time). Prints a Markdown table of each run's bits and R in both, and
the wall-clock ratio. Run the two sweeps side by side, each with one worker and one thread, so
that both see the same machine:

    kcap sweep RECIPE --db A.db --out A --workers 1 --threads 1 > A.log &
    kcap sweep RECIPE --db P.db --out P --workers 1 --threads 1 --pack 3 > P.log &
    kcap runs --db A.db --csv A.csv; kcap runs --db P.db --csv P.csv
    python benchmarks/pack_vs_alone.py A.csv P.csv --logs A.log P.log
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path


def _rows(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["run_id"]: r for r in csv.DictReader(f)}


def sweep_seconds(log: Path) -> float | None:
    """The wall time a finished sweep reports on its last lines ("...; 1234 s; ...")."""
    found = re.findall(r"; (\d+) s\b", " ".join(log.read_text().split()))
    return float(found[-1]) if found else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("alone", type=Path, help="`kcap runs --csv` of the one-at-a-time sweep")
    ap.add_argument("packed", type=Path, help="`kcap runs --csv` of the packed sweep")
    ap.add_argument("--logs", type=Path, nargs=2, metavar=("ALONE_LOG", "PACKED_LOG"))
    args = ap.parse_args()
    alone, packed = _rows(args.alone), _rows(args.packed)
    both = sorted(
        set(alone) & set(packed), key=lambda i: (int(alone[i]["d_model"]), int(alone[i]["N"]))
    )
    print(
        "| run | d | N | bits alone | bits packed | change | R alone | R packed | packed with |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    for i in both:
        a, p = alone[i], packed[i]
        ba, bp = float(a["bits_stored"]), float(p["bits_stored"])
        print(
            f"| `{i}` | {a['d_model']} | {a['N']} | {ba:,.0f} | {bp:,.0f} "
            f"| {f'{100 * (bp - ba) / ba:+.1f}%' if ba else '-'} "
            f"| {float(a['R']):.3f} | {float(p['R']):.3f} "
            f"| {p['packed_with']} |"
        )
    only = sorted(set(alone) ^ set(packed))
    if only:
        print(f"\nIn one store only: {', '.join(only)}")
    if args.logs:
        ta, tp = (sweep_seconds(log) for log in args.logs)
        if ta and tp:
            print(f"\nSweep wall time: alone {ta:,.0f} s, packed {tp:,.0f} s: {ta / tp:.2f}x.")


if __name__ == "__main__":
    main()
