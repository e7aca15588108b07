"""The planner's arithmetic against hand-computed values, from the paper and from a store."""

import json

import pytest
from typer.testing import CliRunner

import synthetic_runs as syn
from kcap.cli.main import app
from kcap.errors import KcapError
from kcap.experiments.analysis import analyse, load_points
from kcap.experiments.plan import parse_bits, plan
from kcap.experiments.store import ResultsStore


def test_paper_constants():
    p = plan(1e6)  # 1000 exposures, GPT2: R = 2 [1.8, 2.3]
    assert (p.source, p.R, p.P) == ("paper", 2.0, 500_000)
    assert p.P_low == pytest.approx(1e6 / 2.3) == pytest.approx(434_782.6, abs=0.1)
    assert p.P_high == pytest.approx(555_555.6, abs=0.1)
    p = plan(3e6, exposures=100)  # R = 1 [1, 2]
    assert (p.P, p.P_low, p.P_high) == (3e6, 1.5e6, 3e6)
    p = plan(1.3e6, exposures=100, arch="llama")  # up to 1.3x worse: R = 1/1.3
    assert pytest.approx(1.69e6) == p.P
    p = plan(1e6, exposures=100, arch="gpt2-no-mlp")  # > 1.5x worse: at least 1.5M params
    assert pytest.approx(1.5e6) == p.P and p.P_high is None


def test_paper_interpolation_and_extrapolation():
    # halfway in log(exposures) between 100 (R = 1) and 1000 (R = 2): R = 1.5
    p = plan(3e6, exposures=316)
    assert pytest.approx(1.5, abs=1e-3) == p.R and pytest.approx(2e6, rel=1e-3) == p.P
    assert "interpolated" in p.detail
    assert plan(1e6, exposures=5000).P == 500_000  # no gain beyond 1000
    low = plan(1e6, exposures=50)
    assert low.P == 1e6 and "optimistic" in low.detail
    unknown = plan(1e6, arch="llama-tied-standard-mlp")
    assert unknown.P == 500_000 and "using GPT2's" in unknown.detail


def test_law_from_the_results_store(tmp_path):
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        syn.law_grid(store, 1.6, seeds=(0, 1))
    (law,) = analyse(load_points(db))
    p = plan(4e6, db=db)
    assert p.source == "results store" and p.R == law.R
    assert pytest.approx(4e6 / law.R) == p.P
    assert p.P_low == pytest.approx(4e6 / law.interval[1])
    assert p.P_high == pytest.approx(4e6 / law.interval[0])
    assert pytest.approx(2.5e6, rel=0.03) == p.P  # 4M bits / 1.6
    # no law at these exposures in the store: the paper's constants
    assert plan(4e6, exposures=100, db=db).source == "paper"


def test_dataset_bits_and_cli(bios_dir, tmp_path):
    manifest = json.loads((bios_dir / "manifest.json").read_text())
    out = CliRunner().invoke(
        app, ["plan", "--dataset", str(bios_dir), "--json", "--db", str(tmp_path / "none.db")]
    )
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert got["bits"] == manifest["bits"]["total"] and got["P"] == got["bits"] / 2
    assert got["family"] == "bioS"
    text = CliRunner().invoke(app, ["plan", "--bits", "5M", "--db", str(tmp_path / "x.db")])
    assert text.exit_code == 0 and "P = 2.5M" in text.output
    bad = CliRunner().invoke(app, ["plan"])
    assert bad.exit_code == 2 and "--bits" in bad.output


def test_parse_bits():
    assert parse_bits("5M") == 5e6
    assert parse_bits("300k") == 3e5
    assert parse_bits("1e6") == 1e6
    assert parse_bits("2.5G") == 2.5e9
    with pytest.raises(KcapError):
        parse_bits("lots")
