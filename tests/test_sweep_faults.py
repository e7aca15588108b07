"""Sweeps that lose nothing: SIGTERM mid-run, orphaned workers, reclaimed runs, and a seeded
stress test that kills drivers and workers at random points (`tests/sweep_stress.py`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.sweep_stress import alive, stress, workers_of
from tests.test_sweep import _executions, _grid, _opts, fake_execute
from tests.tiny import tiny_grid

from kcap.experiments.store import ResultsStore
from kcap.experiments.sweep import run_sweep
from kcap.training import checkpoint as ckpt
from kcap.training.runlock import RunLock

ROOT = Path(__file__).parents[1]


def reclaiming_execute(task: dict) -> dict:
    """Another sweep reclaims this run while it trains (as after a stale timeout)."""
    db = Path(task["run_dir"]).parents[2] / "r.db"
    with ResultsStore(db) as store:
        rec = store.get(task["run_id"])
        assert store.fail_if_unchanged(rec.run_id, rec.updated_at, "interrupted (stale)")
        assert store.claim(rec.run_id, name="other sweep", config=rec.config)
    return fake_execute(task)


def test_an_orphaned_worker_keeps_its_run(tmp_path):
    """A stale row whose run directory is still locked (an orphaned worker training there) is
    not resumed by a later sweep, however old its heartbeat; once the lock is free, it is."""
    (point,) = _grid(1)
    opts = _opts(tmp_path, stale_after=0.1, claim_grace=0.1)
    run_dir = (tmp_path / "sw" / "runs" / point.run_id).resolve()
    with ResultsStore(opts.db) as store:
        store.claim(point.run_id, config=point.config.model_dump(), run_dir=str(run_dir))
    time.sleep(0.3)
    with RunLock(run_dir):  # the orphan
        s = run_sweep([point], opts, execute=fake_execute)
    assert s.ran == 0 and s.skipped == {"running elsewhere": 1} and _executions(tmp_path) == []
    s = run_sweep([point], opts, execute=fake_execute)
    assert s.finished == 1 and _executions(tmp_path) == [f"{point.run_id} resume"]


def test_a_sweep_that_lost_its_claim_writes_nothing(tmp_path):
    (point,) = _grid(1)
    s = run_sweep([point], _opts(tmp_path), execute=reclaiming_execute)
    assert s.finished == 0 and s.skipped == {"lost its claim": 1}
    with ResultsStore(tmp_path / "r.db") as store:
        rec = store.get(point.run_id)
        assert rec.status == "running" and rec.name == "other sweep" and rec.metrics == {}


def test_sigterm_stops_a_sweep_and_the_next_one_resumes(tmp_path):
    """A real sweep of two tiny runs in a subprocess, SIGTERM mid-run: exit 143 with one line
    saying how to resume, no worker left, both runs checkpointed and interrupted; the sweep
    run again resumes both from their checkpoints and records one row each.

    Each run is ~1,500 steps (seconds on any CPU) and the signal goes as soon as both have
    logged: a shorter run (30 exposures, 448 steps) once finished before the signal reached it
    when its worker had started a moment before the other's (CI, 2026-12-03)."""
    grid = tiny_grid(tmp_path / "grid.yaml", exposures=100, checkpoint_every=100_000)
    db, out = tmp_path / "r.db", tmp_path / "sw"
    args = [str(grid), "--db", str(db), "--out", str(out), "--workers", "2", "--no-progress"]
    code = "import sys; from kcap.cli.main import app; app(sys.argv[1:], prog_name='kcap')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "sweep", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    metrics = []
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # both runs are training
        metrics = [m for m in (out / "runs").glob("*/metrics.jsonl") if m.stat().st_size > 0]
        if len(metrics) == 2:
            break
        time.sleep(0.05)
    assert len(metrics) == 2, "the runs never started"
    workers = workers_of(proc.pid)
    assert len(workers) == 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = [line for line in err.splitlines() if line.startswith("Interrupted")]
    assert lines == [  # both runs were mid-training
        "Interrupted by SIGTERM: 2 run(s) checkpointed and marked interrupted; resume: "
        f"kcap sweep {grid} --db {db} --out {out} --workers 2"
    ]
    assert "Traceback" not in err
    time.sleep(0.5)
    assert not any(alive(w) for w in workers)  # no worker outlives the driver
    steps = {}
    with ResultsStore(db) as store:
        for rec in store.list_runs():
            assert rec.status == "failed" and rec.error.startswith("interrupted: SIGTERM at step")
            steps[rec.run_id] = ckpt.load_latest(Path(rec.run_dir))[0]["step"]
    assert len(steps) == 2 and all(s > 0 for s in steps.values())

    from typer.testing import CliRunner

    from kcap.cli.main import app

    res = CliRunner().invoke(app, ["sweep", *args])
    assert res.exit_code == 0, res.output
    assert "2 finished" in res.output and "2 resumed" in res.output
    with ResultsStore(db) as store:
        rows = store.list_runs()
    assert len(rows) == 2 and {r.status for r in rows} == {"finished"}
    for rec in rows:  # the resumed runs went on from their checkpoints: each step logged once
        lines = (Path(rec.run_dir) / "metrics.jsonl").read_text().splitlines()
        logged = [json.loads(x)["step"] for x in lines if '"loss"' in x]
        assert logged == sorted(set(logged))


def test_sweeps_under_fire(tmp_path):
    """>= 20 seeded trials of kills and signals: nothing lost, nothing duplicated, no orphan."""
    figures = stress(tmp_path, trials=20, seed=0)
    print(json.dumps(figures))
    assert all(n > 0 for n in figures["kills"].values())
    assert figures["resumed from a checkpoint"] > 0
    for key in ("lost", "duplicated rows", "overlapping writers", "orphans", "left running"):
        assert figures[key] == 0, (key, figures)
