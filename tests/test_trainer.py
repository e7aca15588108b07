"""Training: the loss falls; checkpoint + resume equals an uninterrupted run bitwise (CPU)."""

import json

import torch

from kcap.training.config import parse_config
from kcap.training.trainer import Trainer, load_run


def _cfg(dataset_dir, **training):
    return parse_config(
        {
            "name": "tiny",
            "dataset": {"path": str(dataset_dir)},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
            "training": {
                "exposures": 3,
                "batch_size": 2,
                "window": 64,
                "lr": 3e-3,
                "threads": 1,
                "checkpoint_every": 1000,
                "log_every": 1,
                **training,
            },
            "measurement": {"batch_size": 40},
        }
    )


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
