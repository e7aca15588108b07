"""Sweeps: skip finished, retry failed, resume interrupted, never run one config twice."""

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.tiny import tiny_grid
from typer.testing import CliRunner

from kcap.errors import KcapError
from kcap.experiments.grid import expand, parse_grid
from kcap.experiments.store import ResultsStore
from kcap.experiments.sweep import INTERRUPTED, SweepOptions, run_sweep

FAIL_LR = 0.0123  # the fake executor fails points with this learning rate while a marker exists


def fake_execute(task: dict) -> dict:
    """Stands in for training (runs in the worker process): logs the run, sleeps, returns."""
    log = Path(task["run_dir"]).parents[1] / "executions.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{task['run_id']} {task['mode']}\n".encode())
    os.close(fd)
    time.sleep(0.2)
    if task["config"]["training"]["lr"] == FAIL_LR and (log.parent / "fail").exists():
        raise RuntimeError("boom")
    metrics = {"bits": {"total": 10.0}, "data_bits": 20.0, "P": 5, "R": 2.0, "R_max": 4.0}
    return {"metrics": metrics, "timings": {"wall_s": 0.2}, "params": {"P": 5}}


def _grid(n_points: int = 4, lrs=(1e-3,)):
    return expand(
        parse_grid(
            {
                "base": {"dataset": {"kind": "bios", "n": 50}, "model": {"preset": "gpt2-1-1"}},
                "product": {"training.seed": list(range(n_points)), "training.lr": list(lrs)},
            }
        )
    )


def _opts(tmp_path, **kw):
    return SweepOptions(db=tmp_path / "r.db", out=tmp_path / "sw", progress=False, **kw)


def _executions(tmp_path) -> list[str]:
    log = tmp_path / "sw" / "executions.log"
    return log.read_text().split("\n")[:-1] if log.exists() else []


def test_finished_runs_are_skipped(tmp_path):
    points = _grid(3)
    first = run_sweep(points, _opts(tmp_path, workers=2), execute=fake_execute)
    assert (first.ran, first.finished, first.failed) == (3, 3, 0)
    second = run_sweep(points, _opts(tmp_path, workers=2), execute=fake_execute)
    assert second.ran == 0 and second.skipped == {"finished": 3}
    assert len(_executions(tmp_path)) == 3
    with ResultsStore(tmp_path / "r.db") as store:
        recs = store.list_runs()
        assert {r.run_id for r in recs} == {p.run_id for p in points}
        assert all(r.status == "finished" and r.params == {"P": 5} for r in recs)
        assert all(r.run_dir.endswith(r.run_id) for r in recs)


def test_failed_runs_are_retried_only_when_asked(tmp_path):
    points = _grid(1, lrs=(1e-3, FAIL_LR))
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "fail").touch()
    s = run_sweep(points, _opts(tmp_path), execute=fake_execute)
    assert (s.finished, s.failed) == (1, 1) and "boom" in s.failures[0][1]
    s = run_sweep(points, _opts(tmp_path), execute=fake_execute)
    assert s.ran == 0 and s.skipped == {"finished": 1, "failed (use --retry-failed)": 1}
    (tmp_path / "sw" / "fail").unlink()
    s = run_sweep(points, _opts(tmp_path, retry_failed=True), execute=fake_execute)
    assert (s.ran, s.finished) == (1, 1)
    assert _executions(tmp_path)[-1].endswith("fresh")  # a retry starts over


def test_interrupted_and_stale_runs_resume(tmp_path):
    a, b, c = _grid(3)
    opts = _opts(tmp_path, stale_after=0.5, claim_grace=0.5)
    run_dir = str((tmp_path / "sw" / "runs" / b.run_id).resolve())
    with ResultsStore(opts.db) as store:
        for p, rd in ((a, None), (b, run_dir), (c, "/elsewhere")):
            store.claim(p.run_id, config=p.config.model_dump(), run_dir=rd)
        store.fail_run(a.run_id, f"{INTERRUPTED}: KeyboardInterrupt")
    time.sleep(0.6)
    s = run_sweep([a, b, c], opts, execute=fake_execute)
    # a: interrupted -> resumed; b: stale and ours -> resumed; c: running elsewhere -> left alone
    assert s.finished == 2 and s.skipped == {"running elsewhere": 1}
    assert sorted(_executions(tmp_path)) == sorted([f"{a.run_id} resume", f"{b.run_id} resume"])


def test_two_sweeps_never_run_the_same_config_twice(tmp_path):
    points = _grid(6)
    results = []

    def sweep():
        results.append(run_sweep(points, _opts(tmp_path, workers=2), execute=fake_execute))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ran = [line.split()[0] for line in _executions(tmp_path)]
    assert sorted(ran) == sorted(p.run_id for p in points)  # each exactly once
    assert sum(r.finished for r in results) == 6
    with ResultsStore(tmp_path / "r.db") as store:
        assert all(r.status == "finished" for r in store.list_runs())


def test_real_sweep_shares_datasets_and_records_runs(tmp_path):
    """End to end through the CLI: two tiny real runs on one shared dataset, then nothing."""
    from kcap.cli.main import app

    grid = tiny_grid(
        tmp_path / "grid.yaml", exposures=2, measurement={"every": 10, "during_max_people": 10}
    )
    args = ["sweep", str(grid), "--db", str(tmp_path / "r.db"), "--out", str(tmp_path / "sw")]
    result = CliRunner().invoke(app, [*args, "--workers", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "2 finished" in result.output
    assert len(list((tmp_path / "sw" / "datasets").glob("*/dataset/manifest.json"))) == 1
    with ResultsStore(tmp_path / "r.db") as store:
        recs = store.list_runs(status="finished")
    assert len(recs) == 2
    for rec in recs:
        assert rec.metrics["P"] == rec.params["P"] > 0
        assert rec.metrics["history"] and rec.manifest["kind"] == "bios"
        assert (Path(rec.run_dir) / "measure.json").is_file()
        assert rec.timings["threads"] == 1 and rec.timings["exposures"]["min"] == 2
    again = CliRunner().invoke(app, [*args, "--no-progress"])
    assert again.exit_code == 0 and "ran 0" in again.output
    listing = CliRunner().invoke(app, [*args, "--dry-run", "--json"])
    assert [r["state"] for r in json.loads(listing.output)] == ["finished", "finished"]


def test_ray_missing_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed (it is a dev extra)
    monkeypatch.setitem(sys.modules, "ray.util.queue", None)
    with pytest.raises(KcapError, match=r"pip install 'kcap\[ray\]'"):
        run_sweep(_grid(1), _opts(tmp_path, ray="local"), execute=fake_execute)


def test_a_worker_imports_its_run_modules_when_it_starts():
    """Measurement modules load lazily; a sweep worker loads them at start, so a source edit
    during a long sweep cannot pair a new module with an old one in a running worker."""
    import subprocess
    import sys

    code = (
        "import sys; from kcap.experiments import sweep; "
        "before = [m for m in sweep.RUN_MODULES if m in sys.modules]; "
        "sweep.import_run_modules(); "
        "print(before, all(m in sys.modules for m in sweep.RUN_MODULES))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True"]


def test_export_keeps_the_studys_record_and_rebuilds_a_store_that_skips_it(tmp_path):
    """--export: the finished runs as JSON lines, rewritten as each finishes; a store rebuilt
    from the file on another machine lets the same sweep skip every run it holds."""
    from kcap.experiments.archive import import_records, read_records

    flag = tmp_path / "sw" / "fail"
    flag.parent.mkdir(parents=True)
    flag.touch()  # the FAIL_LR point fails: a failed run is not in the record
    points = _grid(2, lrs=(1e-3, FAIL_LR))
    out = tmp_path / "results" / "runs.jsonl"
    out.parent.mkdir()
    s = run_sweep(points, _opts(tmp_path, export=out), execute=fake_execute)
    assert (s.finished, s.failed) == (2, 2)
    recs = read_records(out)
    ok = {p.run_id for p in points if p.config.training.lr != FAIL_LR}
    assert {r.run_id for r in recs} == ok and all(r.metrics["R"] == 2.0 for r in recs)
    elsewhere = tmp_path / "elsewhere"
    with ResultsStore(elsewhere / "r.db") as store:
        assert import_records(store, recs) == {"added": 2}
    flag.unlink()
    again = run_sweep(points, _opts(elsewhere), execute=fake_execute)
    assert again.skipped == {"finished": 2} and (again.ran, again.finished) == (2, 2)
