"""`kcap sweep --ray`: a 2-point grid on a Ray cluster started on this machine (``local``)."""

import os
import time
from pathlib import Path

import pytest
from tests.test_sweep import _executions, _grid, _opts, fake_execute

from kcap.experiments.store import ResultsStore
from kcap.experiments.sweep import run_sweep

ray = pytest.importorskip("ray")


def test_two_point_grid_runs_on_a_local_ray(tmp_path, monkeypatch):
    # Ray's workers import the fake executor by name: let them find this repository's tests
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    points = _grid(2)
    t0 = time.perf_counter()
    summary = run_sweep(points, _opts(tmp_path, ray="local", threads=1), execute=fake_execute)
    print(f"2-point grid on a local Ray: {time.perf_counter() - t0:.1f} s")
    assert not ray.is_initialized()  # the sweep started Ray, so it shut it down
    assert (summary.ran, summary.finished, summary.failed) == (2, 2, 0), summary.failures
    assert sorted(line.split()[0] for line in _executions(tmp_path)) == sorted(
        p.run_id for p in points
    )
    with ResultsStore(tmp_path / "r.db") as store:
        recs = store.list_runs()
    assert {r.run_id for r in recs} == {p.run_id for p in points}
    assert all(r.status == "finished" and r.metrics["bits"]["total"] == 10.0 for r in recs)
