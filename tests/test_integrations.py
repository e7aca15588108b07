"""kcap in other training code: the Hugging Face `Trainer` callback logs the figures `kcap.measure`
gives on the same weights; ``training.log: [jsonl, tensorboard]`` writes the listed scalars, the
MFU where the peak is known, and fails in one line without the tensorboard package."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict

import pytest
import torch
import yaml
from typer.testing import CliRunner

import kcap
from kcap.cli.main import app
from kcap.experiments.run_report import write_run_report
from kcap.models import GPT, preset
from kcap.training.config import parse_config
from kcap.training.mfu import flops_per_token, peak_flops, peak_for_name
from kcap.training.trainer import Trainer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

from kcap.integrations.transformers import KnowledgeCallback, figures  # noqa: E402


def _neox(vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=65,
    )
    return transformers.GPTNeoXForCausalLM(config)


class _Recorder(transformers.TrainerCallback):
    """What the Trainer's loggers receive, and a copy of the weights at every step's end."""

    def __init__(self):
        self.logs: list[dict] = []
        self.weights: dict[int, dict] = {}

    def on_log(self, args, state, control, logs=None, **kw):
        self.logs.append(dict(logs or {}))

    def on_step_end(self, args, state, control, model=None, **kw):
        self.weights[state.global_step] = {k: v.clone() for k, v in model.state_dict().items()}


def _trainer(tmp_path, data, model, recorder, max_steps=4):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf-run"),
        max_steps=max_steps,
        per_device_train_batch_size=2,
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    stream = kcap.training_stream(data, exposures=2, window=64, batch_size=2)
    return transformers.Trainer(model=model, args=args, train_dataset=stream, callbacks=[recorder])


def test_callback_figures_equal_kcap_measure_on_the_same_weights(tmp_path, bios_ds):
    model = _neox(bios_ds.tokenizer.vocab_size)
    recorder = _Recorder()
    trainer = _trainer(tmp_path, bios_ds, model, recorder)
    knowledge = KnowledgeCallback(bios_ds, every=2, batch_size=16).attach(trainer)
    trainer.train()
    assert [step for step, _ in knowledge.history] == [2, 4]
    logged = [e for e in trainer.state.log_history if "kcap/bits" in e]
    assert [e["step"] for e in logged] == [2, 4]
    seen = [log for log in recorder.logs if "kcap/R" in log]  # what every logger received
    assert len(seen) == 2
    for (step, m), entry, log in zip(knowledge.history, logged, seen, strict=True):
        fresh = _neox(bios_ds.tokenizer.vocab_size)
        fresh.load_state_dict(recorder.weights[step])
        again = kcap.measure(fresh, bios_ds)
        assert m.to_dict() == again.to_dict()
        expected = figures(again)
        assert set(expected) == {"kcap/bits", "kcap/R", "kcap/recall"}
        assert {k: entry[k] for k in expected} == expected
        assert {k: log[k] for k in expected} == expected
    # the two measurements read different weights: training moved the losses
    assert knowledge.history[0][1].p1 != knowledge.history[1][1].p1


def test_callback_must_be_attached(tmp_path, bios_ds):
    model = _neox(bios_ds.tokenizer.vocab_size)
    trainer = _trainer(tmp_path, bios_ds, model, KnowledgeCallback(bios_ds, every=1), 1)
    with pytest.raises(kcap.KcapError, match=r"^KnowledgeCallback: .*attach"):
        trainer.train()


def _run_config(dataset_dir, **training) -> dict:
    return {
        "dataset": {"path": str(dataset_dir)},
        "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
        "training": {
            "exposures": 2,
            "batch_size": 2,
            "window": 64,
            "lr": 3e-3,
            "threads": 1,
            "log_every": 1,
            **training,
        },
        "measurement": {"every": 3, "during_max_people": 10, "batch_size": 16},
    }


def _events(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_tensorboard_scalars_mirror_the_jsonl(tmp_path, bios_dir, monkeypatch):
    pytest.importorskip("tensorboard")
    peak = 1e12  # a made-up peak, so that the MFU path runs on this CPU
    monkeypatch.setattr("kcap.training.trainer.peak_flops", lambda device, amp: peak)
    cfg = parse_config(_run_config(bios_dir, log=["jsonl", "tensorboard"]))
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.fit()
    records = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n")[:-1]
    ]
    train = [r for r in records if "loss" in r]
    measured = [r for r in records if "measure" in r]
    assert len(train) == trainer.total_steps and len(measured) >= 2
    events = _events(tmp_path / "run" / "tensorboard")
    for tag, key in [
        ("train/loss", "loss"),
        ("train/lr", "lr"),
        ("train/tokens_per_s", "tokens_per_s"),
        ("train/mfu", "mfu"),
    ]:
        assert events[tag] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in train]
    for r in train:
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * trainer.flops_per_token / peak)
    for tag, key in [
        ("measure/bits", "bits"),
        ("measure/R", "R"),
        ("measure/recall_accuracy", "recall_accuracy"),
    ]:
        expected = [
            (r["step"], pytest.approx(r["measure"][key], rel=1e-6, abs=1e-9)) for r in measured
        ]
        assert events[tag] == expected
    # the run's report still reads the JSONL alone
    shutil.rmtree(tmp_path / "run" / "tensorboard")
    assert (
        "bits over training" in write_run_report(tmp_path / "run", tmp_path / "report").read_text()
    )


def test_without_tensorboard_the_run_fails_in_one_line(tmp_path, bios_dir, monkeypatch):
    config = tmp_path / "tb.yaml"
    config.write_text(yaml.safe_dump(_run_config(bios_dir, log=["jsonl", "tensorboard"])))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    r = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "Error: training.log: tensorboard needs the tensorboard package: "
        "pip install 'kcap[tensorboard]'"
    ]
    assert not (tmp_path / "run").exists()
    # jsonl is the record kcap report reads: it cannot be left out
    with pytest.raises(kcap.KcapError, match=r"^training\.log: must include jsonl"):
        parse_config(_run_config(bios_dir, log=["tensorboard"]))


def test_mfu_is_known_only_for_listed_gpus_under_autocast():
    assert peak_for_name("NVIDIA H100 PCIe") == 756e12
    assert peak_for_name("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_for_name("Some CPU") is None
    assert peak_flops(torch.device("cpu"), torch.bfloat16) is None
    assert peak_flops(torch.device("cuda"), None) is None  # fp32: no peak claimed
    cfg = preset("gpt2-2-2", 100, d_model=32, context=16)
    counts = kcap.parameter_counts(GPT(cfg), _Used(100))
    # 6 x every weight a token multiplies (all but the embedding lookup) + attention's 12·L·T·d
    weights = sum(p.numel() for n, p in GPT(cfg).named_parameters() if n != "wte.weight")
    weights += cfg.vocab_size * cfg.d_model  # the tied head
    fpt = flops_per_token(cfg, asdict(counts))
    assert fpt == 6 * weights + 12 * 2 * 16 * 32
    moe = preset("gpt2-2-2-moe4", 100, d_model=32, context=16)
    moe_counts = asdict(kcap.parameter_counts(GPT(moe), _Used(100)))
    assert moe_counts["active"] < moe_counts["P"]
    expert_weights = moe_counts["P"] - moe_counts["active"]
    all_experts = dict(moe_counts, active=moe_counts["P"])
    assert (
        flops_per_token(moe, all_experts) - flops_per_token(moe, moe_counts) == 6 * expert_weights
    )


class _Used:
    """A stand-in dataset for parameter counts: every one of ``v`` tokens is used."""

    def __init__(self, v: int):
        self.manifest = {"vocab": {"used_tokens": v}}
