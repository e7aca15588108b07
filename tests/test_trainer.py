"""Training: the loss falls; checkpoint + resume equals an uninterrupted run bitwise (CPU)."""

import itertools
import json

import pytest
import torch
from tests.tiny import tiny_run

from kcap.training.config import parse_config
from kcap.training.trainer import Trainer, load_run


def _cfg(dataset_dir, **training):
    return parse_config(tiny_run(dataset_dir, **training))


def test_loss_falls_and_run_is_measured(tmp_path, bios_dir):
    trainer = Trainer(_cfg(bios_dir, exposures=6), tmp_path / "run", progress=False)
    result = trainer.fit()
    losses = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in losses if "loss" in r]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    assert 0 <= result.R <= result.R_max
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["exposures"] == {"target": 6, "min": 6, "max": 6}
    assert summary["steps"] == trainer.total_steps
    # the run's report: markdown with the measured figures, and both plots
    from kcap.experiments.run_report import write_run_report

    md = write_run_report(tmp_path / "run", tmp_path / "report").read_text()
    assert f"| P (counted params) | {result.P:,} |" in md
    assert "| exposures (min / max realised) | 6 / 6 |" in md and "![bits over training]" in md
    # bioS: the employer row carries the work city's loss, and the work-city figure is shown
    work_city = result.details["work_city_loss"]
    assert f"| work city loss, in employer (nats) | {work_city:.3f} |" in md
    employer = result.loss_per_attribute["employer"]
    assert f"| employer (with work city) | {employer:.3f} |" in md
    assert (tmp_path / "report" / "loss.png").stat().st_size > 0
    assert (tmp_path / "report" / "bits.png").stat().st_size > 0
    # the run can be reloaded and measured again with identical results
    _, _, model, params = load_run(tmp_path / "run")
    assert params == trainer.params
    for a, b in zip(model.state_dict().values(), trainer.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_equals_uninterrupted(tmp_path, bios_dir):
    cfg = _cfg(bios_dir)
    straight = Trainer(cfg, tmp_path / "a", progress=False)
    straight.fit()
    half = straight.total_steps // 2
    first = Trainer(cfg, tmp_path / "b", progress=False)
    assert first.fit(stop_at=half) is None  # stopped early, checkpoint written
    resumed = Trainer(cfg, tmp_path / "b", progress=False)
    assert resumed.load_checkpoint() and resumed.step == half
    resumed.fit()
    for (k, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    assert (straight.run_dir / "measure.json").read_text() == (
        resumed.run_dir / "measure.json"
    ).read_text()


def test_moe_run_logs_balance_and_measures(tmp_path, bios_dir):
    cfg = parse_config(
        {
            "dataset": {"path": str(bios_dir)},
            "model": {"preset": "gpt2-1-1-moe4", "overrides": {"d_model": 32}},
            "training": {
                "exposures": 2,
                "batch_size": 2,
                "window": 64,
                "threads": 1,
                "log_every": 5,
            },
        }
    )
    trainer = Trainer(cfg, tmp_path / "moe", progress=False)
    result = trainer.fit()
    records = [json.loads(x) for x in (tmp_path / "moe" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "loss" in r]
    assert logged and all("moe/aux/0" in r and "moe/dropped/0" in r for r in logged)
    assert all(r["moe/aux/0"] > 0 and 0 <= r["moe/dropped/0"] <= 1 for r in logged)
    assert trainer.params["active"] < trainer.params["P"]
    assert 0 <= result.R <= result.R_max


def test_run_report_reads_losses_past_logged_events(tmp_path):
    from kcap.experiments.run_report import read_metrics

    records = [
        {"step": 1, "event": "compile", "compile_s": 12.5},
        {"step": 1, "loss": 5.0, "lr": 1e-3},
        {"step": 2, "event": "nan_restart", "lr_scale": 0.5},
        {"step": 2, "loss": 4.0, "lr": 1e-3},
        {"step": 2, "measure": {"bits": 1.0}},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    losses, measures = read_metrics(tmp_path)
    assert [r["loss"] for r in losses] == [5.0, 4.0]
    assert measures == [records[-1]]


def test_learning_rate_schedules():
    """Warmup, then cosine to min_lr_ratio x lr at the last step, or warmup-stable-decay: the
    peak held, then a linear decay over the last decay_fraction of the steps."""
    from kcap.training.schedule import lr_at

    total, warmup = 100, 10
    cos = [lr_at(s, total, warmup, 1.0, 0.1) for s in range(total + 1)]
    assert cos[0] == 0.1 and cos[9] == 1.0 and cos[10] == 1.0
    assert cos[total] == pytest.approx(0.1) and cos[55] == pytest.approx(0.55)
    assert all(a >= b for a, b in itertools.pairwise(cos[10:]))
    wsd = [
        lr_at(s, total, warmup, 1.0, 0.1, schedule="wsd", decay_fraction=0.2) for s in range(101)
    ]
    assert wsd[:10] == cos[:10]
    assert all(x == 1.0 for x in wsd[10:81])  # held at the peak until the last 20 steps
    assert wsd[90] == pytest.approx(0.55) and wsd[total] == pytest.approx(0.1)
    # a decay longer than what warmup leaves starts right after warmup
    short = [lr_at(s, 20, 10, 1.0, 0.0, schedule="wsd", decay_fraction=0.9) for s in range(21)]
    assert short[10] == 1.0 and short[15] == pytest.approx(0.5) and short[20] == 0.0


def test_schedule_defaults_keep_run_ids():
    """Configs written before the schedule setting existed keep their hash (run id)."""
    from kcap.training.config import config_hash, parse_config

    raw = {"dataset": {"kind": "bios", "n": 10}, "model": {"preset": "gpt2-1-1"}}
    cfg = parse_config(raw)
    assert "schedule" not in cfg.model_dump()["training"]
    same = parse_config(raw | {"training": {"schedule": "cosine", "decay_fraction": 0.2}})
    assert config_hash(same.model_dump()) == config_hash(cfg.model_dump())
    wsd = parse_config(raw | {"training": {"schedule": "wsd"}})
    assert config_hash(wsd.model_dump()) != config_hash(cfg.model_dump())
