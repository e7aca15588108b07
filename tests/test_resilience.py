"""Runs that survive: checksummed checkpoints, kill -9 at random steps, signals, one writer per
run directory, and non-finite losses (``training.on_nan``)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from tests.tiny import tiny_run
from typer.testing import CliRunner

from kcap.cli.main import app
from kcap.errors import KcapError
from kcap.experiments.store import ResultsStore
from kcap.experiments.sweep import CLAIM_GRACE_S
from kcap.training import checkpoint as ckpt
from kcap.training import interrupt
from kcap.training.config import config_hash, parse_config
from kcap.training.runlock import RunLock, holder
from kcap.training.trainer import Trainer, TrainingDiverged

ROOT = Path(__file__).parents[1]


def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]


# -- checkpoint files ---------------------------------------------------------------------------


def test_checkpoint_checksum_and_the_last_two(tmp_path):
    ckpt.save({"step": 1, "w": torch.arange(5.0)}, tmp_path)
    ckpt.save({"step": 2, "w": torch.arange(5.0) * 2}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ckpt.CHECKPOINT, ckpt.PREVIOUS])
    state, path = ckpt.load_latest(tmp_path)
    assert state["step"] == 2 and path.name == ckpt.CHECKPOINT
    assert ckpt.load(tmp_path / ckpt.PREVIOUS)["step"] == 1

    latest = tmp_path / ckpt.CHECKPOINT
    good = latest.read_bytes()
    damaged = {
        "truncated": good[: len(good) // 2],
        "no header": good[:20],
        "altered": good[:-9] + bytes([good[-9] ^ 1]) + good[-8:],
        "garbage": b"not a checkpoint at all",
    }
    expected = {
        "truncated": "truncated",
        "no header": "truncated",
        "altered": "SHA-256",
        "garbage": "not a kcap checkpoint",
    }
    for name, data in damaged.items():
        latest.write_bytes(data)
        with pytest.raises(ckpt.CorruptCheckpoint, match=expected[name]):
            ckpt.load(latest)
        warnings = []
        state, path = ckpt.load_latest(tmp_path, warn=warnings.append)
        assert state["step"] == 1 and path.name == ckpt.PREVIOUS, name
        assert len(warnings) == 1 and expected[name] in warnings[0] and "previous" in warnings[0]
    (tmp_path / ckpt.PREVIOUS).write_bytes(good[:100])
    with pytest.raises(KcapError, match="no good checkpoint is left"):
        ckpt.load_latest(tmp_path)
    assert ckpt.load_latest(tmp_path / "nothing-here") is None


def test_checkpoint_written_before_checksums_still_loads(tmp_path):
    torch.save({"step": 7}, tmp_path / ckpt.CHECKPOINT)  # a bare torch.save zip
    assert ckpt.load_latest(tmp_path)[0] == {"step": 7}


def test_a_write_cut_short_keeps_the_good_checkpoints(tmp_path, monkeypatch):
    ckpt.save({"step": 1}, tmp_path)
    ckpt.save({"step": 2}, tmp_path)

    def cut(path, data):
        Path(path).write_bytes(data[: len(data) // 3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "_write_file", cut)
    with pytest.raises(OSError):
        ckpt.save({"step": 3}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ckpt.CHECKPOINT, ckpt.PREVIOUS])
    assert ckpt.load_latest(tmp_path)[0]["step"] == 2


# -- kill -9 at random steps --------------------------------------------------------------------

_TRAIN = textwrap.dedent(
    """
    import os, signal, sys
    from kcap.training import checkpoint
    cut_at = int(os.environ.get("CUT_WRITE", "0"))
    if cut_at:  # SIGKILL this process halfway through its cut_at-th checkpoint write
        calls, write = [0], checkpoint._write_file
        def cut(path, data):
            calls[0] += 1
            if calls[0] < cut_at:
                return write(path, data)
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint._write_file = cut
    from kcap.cli.main import app
    app(sys.argv[1:], prog_name="kcap")
    """
)


def _kcap(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _TRAIN, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return -1
    steps = [json.loads(x)["step"] for x in lines[-2:] if x.endswith("}")]
    return max(steps, default=-1)


def test_kill_9_at_random_steps_then_resume_equals_an_uninterrupted_run(tmp_path, bios_dir):
    raw = tiny_run(bios_dir, exposures=8, checkpoint_every=7)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    straight = Trainer(parse_config(raw), tmp_path / "straight", progress=False)
    straight.fit()
    total = straight.total_steps
    run, db = tmp_path / "run", tmp_path / "kcap.db"
    base = [str(cfg_file), "--out", str(run), "--db", str(db)]

    # one kill inside a checkpoint write (the 3rd), then five at random steps
    proc = _kcap(["train", *base], env={"CUT_WRITE": "3"})
    assert proc.wait(timeout=120) == -signal.SIGKILL
    leftovers = [p.name for p in run.iterdir() if p.name.startswith(".checkpoint")]
    assert leftovers, "the cut write left its temporary file behind"
    kills = [_step(run)]
    rng = random.Random(0)
    for _ in range(4):
        target = min(rng.randrange(_step(run) + 1, total), total - 2)
        proc = _kcap(["train", *base, "--resume"])
        while proc.poll() is None and _step(run) < target:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        kills.append(_step(run))
    assert len(kills) == 5 and max(kills) < total, kills
    with ResultsStore(db) as store:  # the row of a killed run stays "running"...
        assert store.get(config_hash(parse_config(raw).model_dump())).status == "running"
    res = CliRunner().invoke(app, ["train", *base, "--resume"])  # ...its process is gone
    assert res.exit_code == 0, res.output

    resumed = ckpt.load_latest(run)[0]
    assert resumed["step"] == total
    _states_equal(resumed["model"], straight.model.state_dict())
    assert (run / "measure.json").read_text() == (straight.run_dir / "measure.json").read_text()
    assert _losses(run) == _losses(straight.run_dir)  # each step logged once, same losses
    with ResultsStore(db) as store:  # the row's wall time spans every leg, not the last one
        timings = store.get(config_hash(parse_config(raw).model_dump())).timings
    assert timings["wall_s"] >= timings["train_s"]
    with ResultsStore(db) as store:
        assert [r.status for r in store.list_runs()] == ["finished"]


# -- signals ------------------------------------------------------------------------------------


def test_sigterm_checkpoints_records_and_says_how_to_resume(tmp_path, bios_dir):
    raw = tiny_run(bios_dir, exposures=40, checkpoint_every=10_000)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    run, db = tmp_path / "run", tmp_path / "kcap.db"
    proc = _kcap(["train", str(cfg_file), "--out", str(run), "--db", str(db)])
    while proc.poll() is None and _step(run) < 5:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("Interrupted by SIGTERM at step ")
    assert f"resume: kcap train {cfg_file} --out {run} --resume" in lines[0]
    step = ckpt.load_latest(run)[0]["step"]  # checkpoint_every is never reached: the stop wrote it
    assert step >= 5 and f"at step {step:,}," in lines[0]
    assert holder(run) is None  # the lock went with the process
    with ResultsStore(db) as store:
        (rec,) = store.list_runs()
        assert rec.status == "failed" and rec.error == f"interrupted: SIGTERM at step {step:,}"


def test_a_second_signal_stops_at_once():
    interrupt.clear()
    with interrupt.handle_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.pending() == ("SIGTERM", 128 + signal.SIGTERM)
        with pytest.raises(interrupt.Aborted):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes, before this ends
    interrupt.clear()
    assert interrupt.pending() is None


def test_a_stop_request_ends_fit_with_a_checkpoint(tmp_path, bios_dir):
    trainer = Trainer(parse_config(tiny_run(bios_dir)), tmp_path / "r", progress=False)
    seen = []

    def stop_at_step_4(record):
        seen.append(record["step"])
        if record["step"] == 4:
            interrupt.request("test", 3)

    trainer.on_step = stop_at_step_4
    try:
        with pytest.raises(interrupt.RunInterrupted) as info:
            trainer.fit()
    finally:
        interrupt.clear()
    assert (info.value.step, info.value.exit_code) == (4, 3)
    assert ckpt.load_latest(tmp_path / "r")[0]["step"] == 4 and max(seen) == 4


# -- one writer per run -------------------------------------------------------------------------


def test_a_run_directory_has_one_writer(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        assert holder(run) == f"pid {os.getpid()} on {os.uname().nodename}"
        with pytest.raises(KcapError, match="is in use: a run is training there"), RunLock(run):
            pass
    assert holder(run) is None
    with pytest.raises(RuntimeError), RunLock(tmp_path / "new"):  # a failure before any write
        raise RuntimeError
    assert not (tmp_path / "new").exists()  # leaves no directory behind


def test_train_refuses_a_config_that_is_already_training(tmp_path, bios_dir):
    """`kcap train` of a config whose run is alive in a sweep's folder is refused, not run
    twice; once that process is gone, the same command claims the run."""
    raw = tiny_run(bios_dir, exposures=1)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    run_id = config_hash(parse_config(raw).model_dump())
    db, elsewhere = tmp_path / "kcap.db", tmp_path / "sweep" / "runs" / run_id
    with ResultsStore(db) as store:
        store.claim(run_id, config=parse_config(raw).model_dump(), run_dir=str(elsewhere))
    args = ["train", str(cfg_file), "--out", str(tmp_path / "mine"), "--db", str(db)]
    with RunLock(elsewhere):  # the sweep's worker, training
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "already training in" in res.output
    assert not (tmp_path / "mine").exists()
    with sqlite3.connect(db) as con:  # its worker is gone: no lock, claimed long ago
        con.execute("UPDATE runs SET updated_at = updated_at - ?", (CLAIM_GRACE_S + 1,))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    with ResultsStore(db) as store:
        rec = store.get(run_id)
        assert rec.status == "finished" and rec.run_dir == str((tmp_path / "mine").resolve())


# -- non-finite losses --------------------------------------------------------------------------


def _poison(trainer: Trainer, steps: set[int]) -> None:
    """Make the model's output NaN at the given (0-based) steps, once each."""
    left = set(steps)

    def hook(module, args, output):
        if trainer.step in left and module.training:
            left.discard(trainer.step)
            return output * float("nan")
        return output

    trainer.model.register_forward_hook(hook)


def test_on_nan_stop_names_the_step_and_the_last_good_checkpoint(tmp_path, bios_dir):
    cfg = parse_config(tiny_run(bios_dir, checkpoint_every=4))
    trainer = Trainer(cfg, tmp_path, progress=False)
    _poison(trainer, {9})
    with pytest.raises(TrainingDiverged, match=r"at step 10; the last good checkpoint is step 8 "):
        trainer.fit()
    state = ckpt.load_latest(tmp_path)[0]
    assert state["step"] == 8
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_on_nan_skip_drops_the_step(tmp_path, bios_dir):
    trainer = Trainer(parse_config(tiny_run(bios_dir, on_nan="skip")), tmp_path, progress=False)
    _poison(trainer, {3, 7})
    result = trainer.fit()
    assert trainer.skipped_steps == 2 and trainer.step == trainer.total_steps
    assert result is not None and all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_on_nan_restart_goes_back_at_half_the_lr_at_most_twice(tmp_path, bios_dir):
    raw = tiny_run(bios_dir, on_nan="restart", checkpoint_every=4)
    trainer = Trainer(parse_config(raw), tmp_path / "a", progress=False)
    _poison(trainer, {6, 9})
    trainer.fit()
    assert trainer.nan_restarts == 2 and trainer.lr_scale == 0.25
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    events = [r for r in map(json.loads, lines) if "event" in r]
    assert [(e["step"], e["lr_scale"]) for e in events] == [(4, 0.5), (8, 0.25)]

    again = Trainer(parse_config(raw), tmp_path / "b", progress=False)
    _poison(again, {2, 5, 9})  # a third failure: give up
    with pytest.raises(TrainingDiverged, match="gave up after 2 restarts"):
        again.fit()


def test_a_diverged_run_is_one_line_and_a_failed_row(tmp_path, bios_dir, monkeypatch):
    raw = tiny_run(bios_dir, exposures=1)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))

    def diverge(self, **kw):
        raise TrainingDiverged(
            "loss or gradient is not finite at step 3; no checkpoint was written"
        )

    monkeypatch.setattr(Trainer, "fit", diverge)
    db = tmp_path / "kcap.db"
    res = CliRunner().invoke(
        app, ["train", str(cfg_file), "--out", str(tmp_path / "r"), "--db", str(db)]
    )
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "Error: training: loss or gradient is not finite at step 3; no checkpoint was written"
    ]
    with ResultsStore(db) as store:
        (rec,) = store.list_runs()
    assert rec.status == "failed" and rec.error.startswith("TrainingDiverged: loss or gradient")
