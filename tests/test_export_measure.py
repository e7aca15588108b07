"""A trained run exported to transformers measures the same as the run itself (SPEC §4, §5)."""

import json

import pytest
from typer.testing import CliRunner

from kcap.cli.main import app
from kcap.training.config import parse_config
from kcap.training.trainer import Trainer

pytest.importorskip("transformers")
runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, bios_dir):
    out = tmp_path_factory.mktemp("export") / "run"
    cfg = parse_config(
        {
            "dataset": {"path": str(bios_dir)},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
            "training": {"exposures": 2, "batch_size": 2, "window": 64, "threads": 1},
        }
    )
    Trainer(cfg, out, progress=False).fit()
    return out


def test_export_then_measure_hf_equals_run(tmp_path, run_dir, bios_dir):
    hf_dir = tmp_path / "hf"
    r = runner.invoke(app, ["export", str(run_dir), "--hf", str(hf_dir)])
    assert r.exit_code == 0, r.output
    assert (hf_dir / "config.json").is_file() and (hf_dir / "tokenizer.json").is_file()
    ours = json.loads(runner.invoke(app, ["measure", str(run_dir), "--json"]).stdout)
    r = runner.invoke(app, ["measure", "--hf", str(hf_dir), "--dataset", str(bios_dir), "--json"])
    assert r.exit_code == 0, r.output
    theirs = json.loads(r.stdout)
    assert theirs["P"] == ours["P"] and theirs["params"] == ours["params"]
    assert theirs["p1"] == pytest.approx(ours["p1"], abs=1e-4)
    assert theirs["p2"] == pytest.approx(ours["p2"], abs=1e-4)
    assert theirs["bits"]["total"] == pytest.approx(ours["bits"]["total"], abs=1e-2)


def test_export_refuses_non_empty_and_measure_needs_one_source(tmp_path, run_dir):
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("x")
    r = runner.invoke(app, ["export", str(run_dir), "--hf", str(out)])
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(app, ["measure"])
    assert r.exit_code == 2 and "RUN_DIR" in r.output
