"""`benchmarks/rebuild_store.py`: a store rebuilt from committed CSV rows matches each row to the
config whose hash is its run id, and refuses a row it cannot match rather than guess."""

import csv
import importlib.util
from pathlib import Path

import pytest

from kcap.experiments.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "rebuild_store.py"
spec = importlib.util.spec_from_file_location("rebuild_store", SCRIPT)
rebuild_store = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rebuild_store)

COMPACT = ROOT / "results" / "lab" / "compact-law" / "runs.csv"
GRIDS = [
    ROOT / "configs" / "experiments" / f"{g}.yaml"
    for g in ("lab-compact-law", "lab-compact-tiny", "lab-name-pool")
]


def _grid_rows(tmp_path: Path) -> tuple[Path, list[dict]]:
    """The compact probe's rows the grids define (seed 0; the other seeds were run with --set
    and are in its runs.jsonl only), as a CSV of their own."""
    with COMPACT.open() as f:
        rows = [r for r in csv.DictReader(f) if r["seed"] == "0"]
    table = tmp_path / "rows.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table, rows


def test_experiment_rows_rebuild_from_their_grids_with_cut_name_pools(tmp_path):
    table, rows = _grid_rows(tmp_path)
    db = tmp_path / "k.db"
    assert len(rows) == 17 and rebuild_store.rebuild(table, "lab", db, grids=GRIDS) == len(rows)
    with ResultsStore(db) as store:
        recs = {r.run_id: r for r in store.list_runs("finished")}
    assert set(recs) == {r["run_id"] for r in rows}
    for row in rows:
        rec = recs[row["run_id"]]
        assert rec.config["dataset"]["name_pool"] == 20  # exact data bits use the cut pools
        assert rec.metrics["data_bits"] == pytest.approx(float(row["data_bits"]), abs=0.5)
        # R from the row's whole bits: off by at most half a bit per P, and the row's rounding
        assert rec.metrics["R"] == pytest.approx(float(row["R"]), abs=0.5 / int(row["P"]) + 5e-5)


def test_rows_of_a_grid_not_given_are_refused(tmp_path):
    table, _ = _grid_rows(tmp_path)  # every row matches once all three grids are given (above)
    with pytest.raises(SystemExit, match="no config hashes"):
        rebuild_store.rebuild(table, "lab", tmp_path / "k.db", grids=GRIDS[:1])
    assert not (tmp_path / "k.db").exists()
