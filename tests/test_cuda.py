"""The GPU path (run with ``pytest -m cuda`` on a CUDA machine; skipped without one): bf16
autocast with fused AdamW trains, torch.compile reports its compile time, MFU uses the device's
peak from the table (or none for an unlisted device), and two NCCL ranks train one run."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from tests.tiny import tiny_run

from kcap.training.config import parse_config
from kcap.training.mfu import peak_for_name
from kcap.training.trainer import Trainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _records(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _cfg(dataset_dir, **training):
    return parse_config(tiny_run(dataset_dir, device="cuda", **training))


def test_bf16_fused_adamw_run_trains_on_cuda(tmp_path, bios_dir):
    trainer = Trainer(_cfg(bios_dir, exposures=6), tmp_path / "run", progress=False)
    assert trainer.device.type == "cuda" and trainer.amp == torch.bfloat16
    assert trainer.optimizer.defaults["fused"] is True
    assert all(p.is_cuda for p in trainer.model.parameters())
    probe = Trainer(_cfg(bios_dir, exposures=6), tmp_path / "probe", progress=False)
    x, y, n_targets, n_tokens = probe._batch()  # copied from pinned memory, without blocking
    assert x.is_cuda and y.is_cuda and n_tokens == y.numel() and 0 < n_targets <= n_tokens
    result = trainer.fit()
    losses = [r["loss"] for r in _records(tmp_path / "run") if "loss" in r]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0
    assert 0 <= result.R <= result.R_max
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["device"].startswith("cuda") and summary["exposures"]["max"] == 6


def test_compile_on_cuda_reports_its_time_once(tmp_path, bios_dir):
    trainer = Trainer(_cfg(bios_dir, compile=True), tmp_path / "run", progress=False)
    result = trainer.fit()
    events = [r for r in _records(tmp_path / "run") if r.get("event") == "compile"]
    assert len(events) == 1 and events[0]["step"] == 1 and events[0]["compile_s"] > 0
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["compile_s"] == events[0]["compile_s"]
    assert 0 <= result.R <= result.R_max


def test_mfu_uses_the_table_peak_or_none(tmp_path, bios_dir):
    trainer = Trainer(_cfg(bios_dir), tmp_path / "run", progress=False)
    trainer.fit()
    peak = peak_for_name(torch.cuda.get_device_name(trainer.device))
    logged = [r for r in _records(tmp_path / "run") if "loss" in r]
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    if peak is None:  # an unlisted GPU: no made-up peak, no MFU
        assert summary["peak_flops"] == "unknown" and not any("mfu" in r for r in logged)
        return
    assert summary["peak_flops"] == peak
    for r in logged:
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * trainer.flops_per_token / peak)
    if "H200" in torch.cuda.get_device_name(trainer.device):
        assert peak == 989e12


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_nccl_ranks_train_one_run(tmp_path, bios_dir):
    raw = tiny_run(bios_dir, device="cuda", batch_size=2)
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "kcap.cli.main", "train", str(config), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch_size"] == 4
    assert summary["exposures"] == {"target": 3, "min": 3, "max": 3}
