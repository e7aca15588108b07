"""torchrun DDP on the CPU (gloo): 2 ranks with batch B equal one process with batch 2B."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from tests.tiny import tiny_run

from kcap.experiments.store import ResultsStore
from kcap.training.config import config_hash, parse_config
from kcap.training.distributed import World, from_env
from kcap.training.trainer import Trainer, load_run


def test_world_comes_from_torchrun_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert from_env() == World() and from_env().is_main and not from_env().active
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    world = from_env()
    assert (world.rank, world.size, world.local_rank, world.local_size) == (3, 4, 1, 2)
    assert world.active and not world.is_main


def test_two_gloo_ranks_equal_one_process_with_the_global_batch(tmp_path, bios_dir):
    # 40 people x 3 exposures = 120 documents: the last global batch of 4 windows is short
    raw = tiny_run(bios_dir, exposures=3, batch_size=2, device="cpu", checkpoint_every=7)
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(raw))
    db = tmp_path / "kcap.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "kcap.cli.main", "train", str(config), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(
        [*cmd, "--db", str(db)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    single_cfg = parse_config({**raw, "training": {**raw["training"], "batch_size": 4}})
    single = Trainer(single_cfg, tmp_path / "single", progress=False)
    single.fit()

    summary = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch_size"] == 4
    assert summary["steps"] == single.total_steps == summary["total_steps"]
    assert summary["exposures"] == {"target": 3, "min": 3, "max": 3}
    assert summary["tokens"] == single.tokens  # every target of every window, once
    _, _, model, _ = load_run(tmp_path / "ddp")
    worst = 0.0
    for (k, a), b in zip(
        single.model.state_dict().items(), model.state_dict().values(), strict=True
    ):
        diff = (a - b).abs().max().item()
        worst = max(worst, diff)
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (k, diff)
    print(f"max weight difference, 2 ranks vs 1 process: {worst:.3g}")
    ddp_m = json.loads((tmp_path / "ddp" / "measure.json").read_text())
    one_m = json.loads((tmp_path / "single" / "measure.json").read_text())
    assert ddp_m["bits"]["total"] == pytest.approx(one_m["bits"]["total"], rel=1e-4, abs=1e-3)
    assert ddp_m["p1"] == pytest.approx(one_m["p1"], rel=1e-5)
    # rank 0 alone wrote the metrics (each step logged once) and the store row, under the id
    # of the config as written (per-rank batch): the world size is not part of a run's id
    records = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    logged = [r["step"] for r in map(json.loads, records) if "loss" in r]
    assert logged == list(range(1, summary["steps"] + 1))
    ddp_losses = [r["loss"] for r in map(json.loads, records) if "loss" in r]
    one_losses = [
        r["loss"]
        for r in map(json.loads, (tmp_path / "single" / "metrics.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert ddp_losses == pytest.approx(one_losses, rel=1e-5)  # the global batch's mean loss
    with ResultsStore(db) as store:
        rec = store.get(config_hash(parse_config(raw).model_dump()))
    assert rec is not None and rec.status == "finished"
    assert rec.timings["world_size"] == 2 and rec.timings["global_batch_size"] == 4
    assert rec.metrics["bits"]["total"] == ddp_m["bits"]["total"]
