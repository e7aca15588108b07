"""Rebuild a results store from a recorded `kcap runs --csv` table and the recipes that made its
runs, so that `kcap report` can be made again on recorded runs without training them again.

Each row's full config is recovered, not guessed: the recipe grids (``configs/recipes/*-SCALE
.yaml``) are expanded, and a row is kept only when the hash of an expanded config equals its run
id; a quantized row's config is its source run's config plus the ``quantize`` entry that `kcap
quantize` wrote, tried in each form it has had, again kept only on an equal hash. The metrics are
the row's: P exactly, bits stored and its name/value/diversity parts as the CSV rounds them (to
whole bits), recall to four decimals; the data's bits are recomputed exactly from the dataset's
parameters and must agree with the row's (rounded) figure. What a CSV row does not hold stays
absent: the in-training measurements (the report's "bits over training" figure becomes a
placeholder). Any row that cannot be matched stops the rebuild; nothing is filled in. Rows
made by a recipe that has changed since are matched on its version at ``--rev``.

    python benchmarks/rebuild_store.py results/lab/recipes/runs.csv --scale lab --db /tmp/lab.db
    kcap report /tmp/lab.db --out /tmp/lab-report
    python benchmarks/rebuild_store.py --compare results/lab/recipes/report.md \\
        /tmp/lab-report/report.md
    # the rebuilt recipe's rows (2026-12-01: its store was lost), kept as portable records
    python benchmarks/rebuild_store.py results/lab/recipes-v2/runs.csv --rev 63098d2 \\
        --db /tmp/v2.db
    kcap runs --db /tmp/v2.db --export results/lab/recipes-v2/runs.jsonl
    # an experiment's rows (the compact probe's law; its store was lost too)
    python benchmarks/rebuild_store.py results/lab/compact-law/runs.csv --db /tmp/compact.db \
        --grid configs/experiments/lab-compact-law.yaml \
        --grid configs/experiments/lab-compact-tiny.yaml \
        --grid configs/experiments/lab-name-pool.yaml
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from kcap.data.biod import biod_bits
from kcap.data.bios import bios_bits
from kcap.experiments.grid import expand, load_grid
from kcap.experiments.store import ResultsStore
from kcap.training.config import config_hash

RECIPES = Path(__file__).parents[1] / "configs" / "recipes"


def quantize_entries(label: str) -> list[dict]:
    """Every form of the ``quantize`` config entry that `kcap quantize` has written for a
    quantization labelled ``int8-gptq`` (``-g128``) in the CSV: the first (calibrated on 256
    windows, asymmetric grid, no act-order; no ``sym`` key) and the current defaults."""
    m = re.fullmatch(r"int(\d)-(gptq|rtn)(?:-g(\d+))?", label)
    if m is None:
        return []
    bits, method, group = int(m[1]), m[2], int(m[3]) if m[3] else None
    gptq = method == "gptq"
    base = {"bits": bits, "method": method, "group_size": group}
    first = {**base, "calib_windows": 256 if gptq else 0, "act_order": False}
    current = {**base, "sym": True, "act_order": gptq, "calib_people": 1000 if gptq else 0}
    return [first, current]


def data_bits(dataset: dict) -> dict[str, float]:
    """Exact bits of a bioS or bioD dataset (or of a junk mixture's useful data) by component."""
    kind = dataset["useful"] if dataset["kind"] == "junk" else dataset["kind"]
    if kind == "bios":
        return bios_bits(dataset["n"])
    if kind == "biod":
        args = (dataset[k] for k in ("n", "k", "c", "d", "l", "t"))
        return biod_bits(*args, name_pool=dataset.get("name_pool"))
    raise SystemExit(f"no exact bit count for dataset kind {kind!r}: cannot rebuild its rows")


def recipe_configs(scale: str, revs: list[str] = (), grids: list[Path] = ()) -> dict[str, dict]:
    """run id -> full config (as recorded) of every run the recipes of this scale define, as
    they are now and as they were at each git revision in ``revs`` (a recipe since changed),
    and of every run of the other ``grids`` (experiment grids, as they are now)."""
    out: dict[str, dict] = {}
    _add_recipes(out, RECIPES, scale)
    for path in grids:
        _add_grid(out, path)
    for rev in revs:
        with tempfile.TemporaryDirectory(prefix=f"recipes-{rev}-") as tmp:
            tree = subprocess.run(
                ["git", "archive", rev, "configs"], check=True, capture_output=True
            )
            subprocess.run(["tar", "-x", "-C", tmp], input=tree.stdout, check=True)
            _add_recipes(out, Path(tmp) / "configs" / "recipes", scale)
    return out


def _add_recipes(out: dict[str, dict], folder: Path, scale: str) -> None:
    """Add the configs of the recipes of this scale in ``folder`` (a run id seen before keeps
    its first config)."""
    for path in sorted(folder.glob(f"*-{scale}.yaml")):
        _add_grid(out, path)


def _add_grid(out: dict[str, dict], path: Path) -> None:
    """Add the configs of the runs of one grid file (a run id seen before keeps its first)."""
    for point in expand(load_grid(path)):
        out.setdefault(point.run_id, point.config.model_dump())


def match(rows: list[dict], configs: dict[str, dict]) -> dict[str, dict]:
    """run id -> config for every row, by equal hashes; exits naming any row without one."""
    found = {r["run_id"]: configs[r["run_id"]] for r in rows if r["run_id"] in configs}
    names = {r["name"]: r["run_id"] for r in rows}
    for r in rows:
        if not r["quantize"] or r["run_id"] in found:
            continue
        source = found.get(names.get(r["name"][: -len(r["quantize"]) - 1], ""))
        for entry in quantize_entries(r["quantize"]) if source else []:
            config = {**source, "quantize": entry}
            if config_hash(config) == r["run_id"]:
                found[r["run_id"]] = config
    missing = [r["name"] for r in rows if r["run_id"] not in found]
    if missing:
        raise SystemExit("no config hashes to these rows' ids:\n  " + "\n  ".join(missing))
    return found


def record(store: ResultsStore, row: dict, config: dict) -> None:
    """One finished run: the row's figures, the exact data bits (checked against the row's)."""
    data = data_bits(config["dataset"])
    if abs(data["total"] - float(row["data_bits"])) > 0.5:
        raise SystemExit(
            f"{row['name']}: data bits {data['total']:.1f} ≠ the row's {row['data_bits']}"
        )
    P, bits = int(row["P"]), float(row["bits_stored"])
    parts = {k: float(row[f"{k}_bits"]) for k in ("name", "value", "diversity")}
    metrics = {
        "kind": config["dataset"]["kind"],
        "n_people": int(row["N"]),
        "P": P,
        "bits": {**parts, "total": bits},
        "data_bits": data["total"],
        "R": bits / P,
        "R_max": data["total"] / P,
        "recall_accuracy": float(row["recall_accuracy"]),
        "rebuilt_from": "a `kcap runs --csv` row (benchmarks/rebuild_store.py)",
    }
    params = {k: v for k, v in config["dataset"].items() if k not in ("path", "seed")}
    manifest = {"kind": config["dataset"]["kind"], "params": params, "bits": data}
    timings = {k: int(row[k]) for k in ("steps", "tokens") if row.get(k)}
    if row.get("train_s"):
        timings["train_s"] = float(row["train_s"])
    if int(row.get("packed_with") or 0):
        timings["packed_with"] = int(row["packed_with"])
    counts = {"P": P}
    if row.get("non_embedding"):
        counts["non_embedding"] = int(row["non_embedding"])
    store.start_run(
        row["run_id"],
        name=row["name"],
        config=config,
        manifest=manifest,
        run_dir=None,
        params=counts,
    )
    store.finish_run(row["run_id"], metrics=metrics, timings=timings)


def rebuild(
    csv_path: Path, scale: str, db: Path, revs: list[str] = (), grids: list[Path] = ()
) -> int:
    rows = list(csv.DictReader(csv_path.open()))
    configs = match(rows, recipe_configs(scale, revs, grids))
    if db.exists():
        raise SystemExit(f"{db} exists: rebuild into a new store")
    with ResultsStore(db) as store:
        for row in rows:
            record(store, row, configs[row["run_id"]])
    return len(rows)


def verdicts(report_md: Path) -> dict[str, tuple[str, str]]:
    """Result id -> (verdict, our figure) from a report's table of the twelve results."""
    out = {}
    for line in report_md.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0].isdigit():
            out[cells[0]] = (re.match(r"\*\*(.+?)\*\*", cells[4])[1], cells[2])
    return out


def compare(before: Path, after: Path) -> None:
    """Print each result's verdict before and after, marking the ones that changed."""
    old, new = verdicts(before), verdicts(after)
    for rid in sorted(old, key=int):
        mark = "  " if old[rid][0] == new[rid][0] else "* "
        print(f"{mark}{rid:>2}: {old[rid][0]} -> {new[rid][0]}")
        if old[rid][0] != new[rid][0]:
            print(f"      before: {old[rid][1]}\n      after:  {new[rid][1]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv", type=Path, nargs="?", help="a `kcap runs --csv` table")
    ap.add_argument("--scale", default="lab", help="the recipes' scale (lab, gpu, paper)")
    ap.add_argument("--db", type=Path, help="the new results store to write")
    ap.add_argument(
        "--rev", action="append", default=[], help="also the recipes at this git revision"
    )
    ap.add_argument(
        "--grid",
        type=Path,
        action="append",
        default=[],
        help="also the runs of this experiment grid (configs/experiments/*.yaml); repeatable",
    )
    ap.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    if args.compare:
        compare(*args.compare)
        return
    if args.csv is None or args.db is None:
        ap.error("give a CSV and --db (or --compare BEFORE AFTER)")
    n = rebuild(args.csv, args.scale, args.db, args.rev, args.grid)
    print(f"{n} runs -> {args.db}", file=sys.stderr)


if __name__ == "__main__":
    main()
