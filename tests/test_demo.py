"""`kcap demo`: its grid over-fills three widths, it runs end to end, and it prints the law the
store holds (a short run: 2 exposures instead of 1000)."""

from __future__ import annotations

import re

from rich.console import Console
from typer.testing import CliRunner

from kcap.cli.demo import print_law
from kcap.cli.main import app
from kcap.experiments.analysis import Point, fit_group
from kcap.experiments.demo import demo_law, demo_points
from kcap.experiments.store import ResultsStore


def test_the_grid_gives_each_of_three_widths_two_sets_of_strings_and_set_reaches_the_base():
    points = demo_points(["training.exposures=7", "dataset.m=5"])
    widths = {}
    for p in points:
        widths.setdefault(p.config.model.overrides["d_model"], []).append(p.config.dataset.m)
        assert p.config.training.exposures == 7
        assert p.config.dataset.kind == "random"
    assert sorted(widths) == [8, 16, 32]
    for ms in widths.values():  # a block's own number of strings wins over --set
        assert len(ms) == 2 and max(ms) == 2 * min(ms) and 5 not in ms


def _point(d: int, m: int, P: int, bits: float) -> Point:
    return Point(
        run_id=f"r{d}-{m}",
        name=f"random-m{m}-d{d}",
        family="random-strings",
        exposures=1000,
        arch="gpt2",
        model=f"gpt2-2-2,d_model={d}",
        dataset=f"random n={m} s=64 v=128",
        n=m,
        replicate=(0, 0),
        P=P,
        bits=bits,
        data_bits=448.0 * m,
        recall=0.0,
    )


def test_print_law_reports_each_model_and_the_fitted_ratio():
    law = fit_group(
        [
            _point(8, 60, 2_800, 4_500),
            _point(8, 120, 2_800, 4_700),
            _point(16, 100, 8_700, 20_000),
            _point(16, 200, 8_700, 21_000),
            _point(32, 300, 29_600, 70_000),
            _point(32, 600, 29_600, 110_000),  # still rising: not at capacity
        ]
    )
    console = Console(record=True, width=200)
    print_law(console, law)
    text = console.export_text()
    assert "M 120: 4.7k / 53.8k" in text and "M 600: 110.0k / 268.8k" in text
    assert law.n_at_capacity == 2
    r = re.search(r"capacity ratio R = ([\d.]+) \[", text)
    assert r and abs(float(r.group(1)) - law.R) < 0.01
    assert "over 2 of 3 models at capacity" in text


def test_print_law_without_a_capacity_gives_the_peak_only():
    law = fit_group([_point(8, 60, 2_800, 1_000), _point(8, 120, 2_800, 2_000)])
    console = Console(record=True, width=200)
    print_law(console, law)
    text = console.export_text()
    assert "no model reached its capacity" in text and "peak R 0.71" in text


def test_demo_runs_end_to_end_and_prints_what_its_store_holds(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--workers", "1", "--set", "training.exposures=2"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    with ResultsStore(out / "kcap.db") as store:
        runs = store.list_runs(status="finished")
    assert len(runs) == 6
    assert (out / "report" / "report.md").is_file()
    assert "random-strings" in (out / "report" / "report.md").read_text()
    law = demo_law(out / "kcap.db")
    assert law is not None and len(law.models) == 3
    # over-filled: every set holds more bits than its model could at Morris et al.'s 3.6
    # bits/param, the most measured on random strings (so a plateau can be a capacity)
    assert all(p.data_bits > 3.6 * p.P for p in law.points)
    for m in law.models:  # every model's row, with the P the store recorded
        assert f"{m.P:,}" in r.output
    # a second demo into the same folder is refused, not mixed with the first
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "not empty" in again.output
