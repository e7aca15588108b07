"""`benchmarks/seed_table.py`, which makes the README's seed tables: mean R over seeds and range."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_table.py"
spec = importlib.util.spec_from_file_location("seed_table", SCRIPT)
seed_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_table)


PROBE = "bioD k=8 c=1 d=128 l=1 t=128"


def _row(arch: str, n: int, seed: int, R: float, exposures: int = 100, d: int = 32) -> dict:
    return {"arch": arch, "N": n, "seed": seed, "R": R, "P": 50_000, "exposures": exposures,
            "d_model": d, "family": "bioD", "setting": PROBE, "quantize": ""}  # fmt: skip


def test_cells_are_the_mean_over_seeds_with_their_range_and_count():
    rows = [_row("gpt2", 400, s, r) for s, r in enumerate((0.2, 0.3, 0.4))]
    rows += [_row("llama", 400, 0, 0.25), _row("llama", 800, 0, 0.5)]
    rows += [_row("gpt2", 400, 0, 9.0, exposures=1000), _row("gpt2", 400, 0, 9.0, d=16)]
    table = seed_table.seed_table(rows, 100, d_model=32).splitlines()
    assert table[0] == "| model | P | R at N = 400 (seeds) | R at N = 800 (seeds) |"
    assert table[2] == "| gpt2 d 32 | 50,000-50,000 | 0.30 [0.20, 0.40] (3) | — |"
    assert table[3] == "| llama d 32 | 50,000-50,000 | 0.25 (1) | 0.50 (1) |"
    assert len(table) == 4  # the 1000-exposure and d-16 rows are left out


def test_two_settings_of_one_family_are_two_rows_not_more_seeds():
    # bioD's K 8 C 1 and K 4 C 2 hold the same data bits; only the setting tells them apart
    rows = [_row("gpt2", 800, s, r) for s, r in enumerate((0.5, 0.6, 0.7))]
    rows.append(_row("gpt2", 800, 0, 1.5))
    rows[3]["setting"] = "bioD k=4 c=2 d=128 l=1 t=128"
    for i, r in enumerate(rows):
        r["run_id"] = f"id{i}"
    table = seed_table.seed_table(rows, 100).splitlines()
    assert table[2] == "| gpt2 d 32 (bioD k=4 c=2 d=128 l=1 t=128) | 50,000-50,000 | 1.50 (1) |"
    assert table[3] == f"| gpt2 d 32 ({PROBE}) | 50,000-50,000 | 0.60 [0.50, 0.70] (3) |"
    only = seed_table.seed_table(rows, 100, dataset="k=8 c=1").splitlines()
    assert only[2] == "| gpt2 d 32 | 50,000-50,000 | 0.60 [0.50, 0.70] (3) |" and len(only) == 3


def test_a_csv_without_the_setting_column_is_refused_not_guessed():
    rows = [_row("gpt2", 400, 0, 0.2)]
    del rows[0]["setting"]
    with pytest.raises(ValueError, match="kcap runs --csv"):
        seed_table.seed_table(rows, 100)


def test_the_setting_column_is_what_kcap_runs_writes(tmp_path):
    # end to end: two settings of one family in a store come out as two rows of the table
    import csv

    from typer.testing import CliRunner

    import synthetic_runs as syn
    from kcap.cli.main import app
    from kcap.experiments.store import ResultsStore

    db = tmp_path / "kcap.db"
    with ResultsStore(db) as store:
        for biod in ((8, 1, 128, 1, 128), (4, 2, 128, 1, 128)):
            syn.record(store, n=800, P=40_000, R=1.0, biod=biod)
    out = tmp_path / "runs.csv"
    res = CliRunner().invoke(app, ["runs", "--db", str(db), "--csv", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    table = seed_table.seed_table(rows, 1000).splitlines()
    assert len(table) == 4 and "(bioD k=4 c=2 d=128 l=1 t=128)" in table[2]


def test_a_seed_counted_twice_stops_the_table_with_both_run_ids():
    rows = [_row("gpt2", 400, 0, 0.2), _row("gpt2", 400, 0, 0.3)]  # e.g. two learning rates
    for i, r in enumerate(rows):
        r.update(run_id=f"run{i}", preset="gpt2-2-2", name="biod-n400-k8c1d128l1t128-gpt2-2-2-x")
    with pytest.raises(ValueError, match="run0 and run1"):
        seed_table.seed_table(rows, 100)


def test_the_baseline_column_pairs_seeds_and_takes_each_seeds_peak_over_shared_n():
    rows = [_row("gpt2", n, s, r) for s, n, r in ((0, 400, 0.2), (0, 800, 0.4), (1, 400, 0.3))]
    rows += [_row("gpt2", 800, 1, 0.1), _row("gpt2", 1600, 0, 5.0)]  # N 1,600: gpt2 only
    rows += [_row("llama", n, s, r) for s, n, r in ((0, 400, 0.1), (0, 800, 0.8), (1, 400, 0.75))]
    rows += [_row("llama", 800, 1, 0.2), _row("llama", 800, 2, 9.0)]  # seed 2: llama only
    for i, r in enumerate(rows):
        r["run_id"] = f"id{i}"
    table = seed_table.seed_table(rows, 100, baseline="gpt2").splitlines()
    assert table[0].endswith("| gpt2 / it (peak, paired seeds) |")
    assert table[2].endswith("| — |")  # the baseline itself
    # peaks over N 400-800 on seeds 0 and 1: gpt2 0.4 / 0.3, llama 0.8 / 0.75: the mean peaks'
    # ratio 0.35 / 0.775, the per-seed ratios 0.5 and 0.4
    assert table[3].endswith("| 0.45 [0.40, 0.50] (2) |")
    assert seed_table.seed_table(rows, 100).splitlines()[0].count("|") == 6  # no column


def test_a_run_in_two_csvs_counts_once_and_the_script_reads_them_as_one(tmp_path):
    import csv
    import subprocess
    import sys

    base = [_row("gpt2", 400, s, r) for s, r in enumerate((0.2, 0.4))]
    lever = [_row("gpt2-x", 400, s, r) for s, r in enumerate((0.4, 0.8))]
    paths = []
    for i, rows in enumerate((base, base + lever)):  # the second CSV repeats the baseline
        for j, r in enumerate(rows):
            r["run_id"] = f"{r['arch']}-{j}"
        paths.append(tmp_path / f"{i}.csv")
        with paths[-1].open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    args = [*map(str, paths), "--exposures", "100", "--baseline", "gpt2"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[2] == "| gpt2 d 32 | 50,000-50,000 | 0.30 [0.20, 0.40] (2) | — |"
    assert (
        lines[3]
        == "| gpt2-x d 32 | 50,000-50,000 | 0.60 [0.40, 0.80] (2) | 0.50 [0.50, 0.50] (2) |"
    )
