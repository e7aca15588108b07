"""Sweeps under fire: a seeded stress test that kills sweep drivers and workers at random points.

Each trial starts a sweep driver in a subprocess (2 workers) over a grid of simulated runs, then
at a random moment kills the driver (SIGKILL), kills one worker (SIGKILL), stops the driver
(SIGTERM), or stops it twice (SIGTERM, SIGINT). A simulated run trains ``STEPS`` steps of a few
milliseconds, checkpoints after each, honours stop requests like the real trainer and logs when
it starts and ends. After the trials a last sweep runs to completion; then we count

- lost: points not finished in the store, or finished without all their steps;
- duplicated: rows beyond one per point, and overlapping trainings of one run (two writers);
- orphans: worker processes alive after their driver was gone;
- left running: rows still "running" at the end (stale rows must be reclaimed).

Run as a benchmark: ``python -m tests.sweep_stress [TRIALS] [SEED]`` prints the figures.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from kcap.experiments.grid import expand, parse_grid
from kcap.experiments.store import ResultsStore
from kcap.experiments.sweep import SweepOptions, run_sweep
from kcap.training import interrupt

ROOT = Path(__file__).parents[1]
STEPS = 25
STEP_S = 0.02
POINTS = 24
ACTIONS = ("kill driver", "kill worker", "term driver", "term twice")


def points():
    grid = {
        "base": {"dataset": {"kind": "bios", "n": 50}, "model": {"preset": "gpt2-1-1"}},
        "product": {"training.seed": list(range(POINTS))},
    }
    return expand(parse_grid(grid))


def _event(run_dir: Path, text: str) -> None:
    log = run_dir.parents[1] / "events.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{text}\n".encode())
    os.close(fd)


def simulated_run(task: dict) -> dict:
    """A stand-in for training: STEPS steps, a checkpoint after each, stops on request."""
    run_dir = Path(task["run_dir"])
    state_file = run_dir / "state.json"
    step = 0
    if task["mode"] == "resume" and state_file.is_file():
        step = json.loads(state_file.read_text())["step"]
    else:
        for path in run_dir.glob("state*"):
            path.unlink()
    _event(run_dir, f"start {task['run_id']} {os.getpid()} {time.time()!r} {step}")
    while step < STEPS:
        stop = interrupt.pending()
        if stop is not None:
            _event(run_dir, f"end {task['run_id']} {os.getpid()} {time.time()!r}")
            raise interrupt.RunInterrupted(stop[0], step, stop[1])
        time.sleep(STEP_S)
        step += 1
        tmp = run_dir / "state.tmp"
        tmp.write_text(json.dumps({"step": step}))
        os.replace(tmp, state_file)
    _event(run_dir, f"end {task['run_id']} {os.getpid()} {time.time()!r}")
    metrics = {"steps": step, "bits": {"total": 1.0}, "R": 1.0, "R_max": 2.0, "P": 1}
    return {"metrics": metrics, "timings": {"wall_s": STEPS * STEP_S}, "params": {"P": 1}}


def options(root: Path) -> SweepOptions:
    return SweepOptions(
        db=root / "stress.db",
        out=root / "sweep",
        workers=2,
        threads=1,
        progress=False,
        claim_grace=1.0,
        stale_after=5.0,
        stop_grace=10.0,
    )


def driver(root: str) -> None:
    """The body of a driver subprocess. Its points come pickled: validating configs would
    import torch (the model presets), which costs each driver seconds."""
    grid = pickle.loads((Path(root) / "points.pkl").read_bytes())
    run_sweep(grid, options(Path(root)), name="stress", execute=simulated_run)


def workers_of(pid: int) -> list[int]:
    """The sweep worker processes (spawned pool workers) whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_driver(root: Path) -> subprocess.Popen:
    code = (
        f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'src')!r}]; "
        f"from tests.sweep_stress import driver; driver({str(root)!r})"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def trial(root: Path, rng: random.Random) -> dict:
    """One trial: start a driver, hit it (or a worker) at a random moment, wait for the end."""
    t0 = time.time()
    events = root / "sweep" / "events.log"
    seen = events.stat().st_size if events.exists() else 0
    proc = _start_driver(root)
    action = rng.choice(ACTIONS)
    deadline = time.time() + 20  # wait for the driver's first run to start, then a moment more
    while time.time() < deadline and proc.poll() is None:
        if events.exists() and events.stat().st_size > seen:
            break
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.8))
    workers = workers_of(proc.pid)
    dead_by: dict[int, float] = {}  # when a worker killed without its end event was dead
    if action == "kill driver":
        proc.send_signal(signal.SIGKILL)
    elif action == "kill worker" and workers:
        victim = rng.choice(workers)
        os.kill(victim, signal.SIGKILL)
        dead_by[victim] = time.time()
    elif action == "term driver":
        proc.send_signal(signal.SIGTERM)
    elif action == "term twice":
        proc.send_signal(signal.SIGTERM)
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=1.5 if action == "kill worker" else 15)
    except subprocess.TimeoutExpired:  # after a worker kill the driver carries on: stop it
        workers += workers_of(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    exited = time.time()
    deadline = exited + 3
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.05)
    orphans = [w for w in workers if alive(w)]
    for w in orphans:  # leave nothing behind for the next trial
        os.kill(w, signal.SIGKILL)
    for w in workers:
        dead_by.setdefault(w, exited if w not in orphans else time.time())
    return {
        "action": action,
        "workers": len(workers),
        "orphans": len(orphans),
        "dead_by": dead_by,
        "seconds": time.time() - t0,
    }


def _overlaps(events: list[str], dead_by: dict[int, float]) -> int:
    """Trainings of one run whose [start, end] intervals overlap (two writers at once). A
    training killed before its end event ends when its process was known dead."""
    spans: dict[str, list[tuple[float, float]]] = {}
    open_: dict[tuple[str, str], float] = {}
    for line in events:
        parts = line.split()
        if parts[0] == "start":
            open_[(parts[1], parts[2])] = float(parts[3])
        elif parts[0] == "end":
            start = open_.pop((parts[1], parts[2]), None)
            if start is not None:
                spans.setdefault(parts[1], []).append((start, float(parts[3])))
    for (run_id, pid), start in open_.items():
        spans.setdefault(run_id, []).append((start, dead_by.get(int(pid), time.time())))
    count = 0
    for intervals in spans.values():
        intervals.sort()
        count += sum(b[0] < a[1] for a, b in itertools.pairwise(intervals))
    return count


def stress(root: Path, trials: int = 20, seed: int = 0) -> dict:
    """Run the trials and the final sweep; returns the figures."""
    rng = random.Random(seed)
    t0 = time.time()
    root.mkdir(parents=True, exist_ok=True)
    (root / "points.pkl").write_bytes(pickle.dumps(points()))
    outcomes = [trial(root, rng) for _ in range(trials)]
    time.sleep(options(root).claim_grace)  # a row claimed just now may still get its worker
    final = run_sweep(points(), options(root), name="stress", execute=simulated_run)
    events_file = root / "sweep" / "events.log"
    events = events_file.read_text().splitlines() if events_file.exists() else []
    with ResultsStore(root / "stress.db") as store:
        rows = store.list_runs()
    ids = {p.run_id for p in points()}
    finished = {r.run_id for r in rows if r.status == "finished" and r.metrics["steps"] == STEPS}
    by_action = {a: sum(o["action"] == a for o in outcomes) for a in ACTIONS}
    dead_by = {pid: t for o in outcomes for pid, t in o["dead_by"].items()}
    return {
        "trials": trials,
        "kills": by_action,
        "runs started": sum(line.startswith("start") for line in events),
        "resumed from a checkpoint": sum(
            line.startswith("start") and int(line.split()[-1]) > 0 for line in events
        ),
        "resumed in the final sweep": final.resumed,
        "lost": len(ids - finished),
        "duplicated rows": len(rows) - len({r.run_id for r in rows}),
        "overlapping writers": _overlaps(events, dead_by),
        "orphans": sum(o["orphans"] for o in outcomes),
        "left running": sum(r.status == "running" for r in rows),
        "seconds": round(time.time() - t0, 1),
        "slowest trial (s)": round(max(o["seconds"] for o in outcomes), 1),
    }


if __name__ == "__main__":
    import tempfile

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    s = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(stress(Path(tmp), n, s), indent=2))
