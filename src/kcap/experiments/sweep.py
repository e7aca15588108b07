"""Run the points of a grid: resumable, in parallel worker processes or on a Ray cluster.

Layout of a sweep folder (``--out``)::

    OUT/datasets/<dataset key>/dataset   one generated dataset per distinct dataset spec, shared
    OUT/runs/<run id>/                   one run directory per point (``dataset`` links to the
                                         shared one); what `kcap train --out` would write

The results store is the ledger, and only this (driver) process writes to it: before a point is
handed to a worker the driver *claims* its id (`ResultsStore.claim`, atomic across processes), so
two workers -- or two sweeps sharing a database -- never run the same config twice. Workers train
and measure, stream progress back through a queue, and return the measurement; they never touch
the database, which is what lets a Ray cluster write results back to the one local SQLite file.

What happens to a point, by its row in the store:

- no row: run it (resuming from a checkpoint left in its run directory, if any);
- ``finished``: skip;
- ``running``: skip (another sweep has it) -- unless its heartbeat is older than
  ``stale_after`` and its run directory is ours: then the sweep that ran it died, and the run is
  resumed from its last checkpoint;
- ``failed`` because it was interrupted (Ctrl-C, a killed worker): resumed from its checkpoint;
- ``failed`` with an error: skipped, or re-run from scratch with ``retry_failed``.

Each worker process uses ``threads`` torch threads (cores // workers by default).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing as mp
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kcap.errors import KcapError
from kcap.experiments.grid import GridPoint, dataset_key
from kcap.experiments.store import ResultsStore, RunRecord

__all__ = [
    "INTERRUPTED",
    "SweepOptions",
    "SweepSummary",
    "ensure_dataset",
    "execute_point",
    "point_states",
    "run_sweep",
]

INTERRUPTED = "interrupted"
_MESSAGE_EVERY_S = 0.5


@dataclass
class SweepOptions:
    db: Path
    out: Path
    workers: int = 1
    threads: int | None = None  # torch threads per worker; None: cores // workers
    retry_failed: bool = False
    ray: str | None = None  # a Ray address, or "local" to start one here
    progress: bool = True
    stale_after: float = 300.0  # seconds without a heartbeat before a running row is stale
    heartbeat_every: float = 20.0


@dataclass
class SweepSummary:
    total: int = 0
    ran: int = 0
    finished: int = 0
    failed: int = 0
    resumed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # by reason
    failures: list[tuple[str, str]] = field(default_factory=list)  # (name, error)
    seconds: float = 0.0

    def line(self, name: str) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()) if n)
        return (
            f"sweep {name}: {self.total} runs; ran {self.ran} ({self.finished} finished, "
            f"{self.failed} failed, {self.resumed} resumed); skipped {skipped or 'none'}; "
            f"{self.seconds:.0f} s"
        )


def run_dir_of(opts: SweepOptions, point: GridPoint) -> Path:
    return (opts.out / "runs" / point.run_id).resolve()


# ------------------------------------------------------------------------------ decisions


def point_states(points: list[GridPoint], store: ResultsStore) -> dict[str, str]:
    """What the store says of each point: new, finished, running, interrupted or failed."""
    states = {}
    for p in points:
        rec = store.get(p.run_id)
        states[p.run_id] = "new" if rec is None else _state(rec)
    return states


def _state(rec: RunRecord) -> str:
    if rec.status == "failed" and (rec.error or "").startswith(INTERRUPTED):
        return "interrupted"
    return rec.status


def _try_claim(store: ResultsStore, point: GridPoint, run_dir: Path, opts: SweepOptions):
    """Claim ``point`` for this sweep; return "resume" / "fresh", or a reason to skip it."""
    rec = store.get(point.run_id)
    mode = "resume"
    if rec is not None:
        state = _state(rec)
        if state == "finished":
            return None, "finished"
        if state == "running":
            stale = time.time() - rec.updated_at > opts.stale_after
            if not (stale and rec.run_dir == str(run_dir) and _mark_stale(store, rec)):
                return None, "running elsewhere"
        elif state == "failed":
            if not opts.retry_failed:
                return None, "failed (use --retry-failed)"
            mode = "fresh"
    claimed = store.claim(
        point.run_id, name=point.name, config=point.config.model_dump(), run_dir=str(run_dir)
    )
    return (mode, None) if claimed else (None, "running elsewhere")


def _mark_stale(store: ResultsStore, rec: RunRecord) -> bool:
    """Mark a running row failed (interrupted) if nobody touched it since we read it."""
    return store.fail_if_unchanged(
        rec.run_id, rec.updated_at, f"{INTERRUPTED} (stale: no heartbeat)"
    )


# ------------------------------------------------------------------------------ worker side

_QUEUE: Any = None


def _init_worker(queue: Any) -> None:
    """Worker process setup: the progress queue; Ctrl-C is left to the driver."""
    import signal

    global _QUEUE
    _QUEUE = queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def post(kind: str, run_id: str, **data: Any) -> None:
    """Send a progress message to the driver (a no-op outside a sweep worker)."""
    if _QUEUE is not None:
        with contextlib.suppress(Exception):  # a full or closed queue must never kill a run
            _QUEUE.put_nowait((kind, run_id, data))


def ensure_dataset(point: GridPoint, cache: Path) -> Path | None:
    """Generate the point's dataset once into ``cache`` (a file lock serialises workers)."""
    import fcntl

    from kcap.training.trainer import prepare_dataset

    key = dataset_key(point.config)
    if key is None:
        return None
    home = cache / key
    target = home / "dataset"
    if not (target / "manifest.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (target / "manifest.json").is_file():
                prepare_dataset(point.config, home)
    return target


def execute_point(task: dict) -> dict:
    """Train and measure one point in a worker; returns what the driver records in the store.

    ``task``: run_id, config (dict), run_dir, cache (dataset cache), threads, mode
    ("resume": continue from a checkpoint in run_dir if there is one; "fresh": start over).
    """
    import torch

    from kcap.experiments.grid import GridPoint
    from kcap.training.checkpoint import CHECKPOINT
    from kcap.training.config import RunConfig
    from kcap.training.trainer import Trainer

    run_id, run_dir = task["run_id"], Path(task["run_dir"])
    torch.set_num_threads(task["threads"])
    cfg = RunConfig.model_validate(task["config"])
    point = GridPoint(cfg, run_id, {})
    t0 = time.time()
    try:
        has_checkpoint = (run_dir / CHECKPOINT).is_file()
        resume = task["mode"] == "resume" and has_checkpoint
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        shared = ensure_dataset(point, Path(task["cache"]))
        link = run_dir / "dataset"
        if shared is not None and not link.exists():
            link.symlink_to(shared, target_is_directory=True)
        last = [0.0]

        def on_step(record: dict) -> None:
            now = time.time()
            if "measure" in record or now - last[0] >= _MESSAGE_EVERY_S:
                last[0] = now
                post("step", run_id, step=record["step"], loss=record.get("loss"))

        # A sweep worker shares the machine: its share of the cores, unless the config names a
        # thread count (threads stay out of the config so a run's id ignores --workers).
        trainer = Trainer(cfg, run_dir, progress=False, on_step=on_step, threads=task["threads"])
        if resume:
            trainer.load_checkpoint()
        post(
            "started",
            run_id,
            total_steps=trainer.total_steps,
            step=trainer.step,
            resumed=resume,
            params=trainer.params,
            manifest=trainer.dataset.manifest,
        )
        result = trainer.fit()
        summary = trainer.summary()
    except BaseException:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        raise
    metrics = result.to_dict()
    metrics["history"] = _history(run_dir)
    timings = {
        "wall_s": time.time() - t0,
        "train_s": summary["train_seconds"],
        "tokens_per_s": summary["tokens_per_s"],
        "steps": summary["steps"],
        "tokens": summary["tokens"],
        "exposures": summary["exposures"],
        "threads": summary["threads"],
        "device": summary["device"],
        "host": socket.gethostname(),
        "resumed": resume,
    }
    return {"metrics": metrics, "timings": timings, "params": trainer.params}


def _history(run_dir: Path) -> list[dict]:
    """The in-training measurements of metrics.jsonl (kept in the store for remote runs)."""
    out = []
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "measure" in rec:
                out.append({"step": rec["step"], **rec["measure"]})
    return out


def _ray_task(fn: Callable[[dict], dict], task: dict, queue: Any) -> dict:
    global _QUEUE
    _QUEUE = queue
    return fn(task)


# ------------------------------------------------------------------------------ backends


class _LocalBackend:
    """A pool of spawned worker processes on this machine."""

    def __init__(self, workers: int, threads: int):
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.pool = cf.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(self.queue,)
        )

    def submit(self, fn: Callable[[dict], dict], task: dict) -> Any:
        return self.pool.submit(fn, task)

    def wait(self, handles: list, timeout: float) -> list:
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Any) -> dict:
        return handle.result()

    def messages(self) -> list:
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except Exception:
                return out

    def broken(self, exc: BaseException) -> bool:
        return isinstance(exc, cf.process.BrokenProcessPool)

    def shutdown(self, *, abort: bool) -> None:
        if abort:
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                proc.terminate()
        self.pool.shutdown(wait=not abort, cancel_futures=True)


class _RayBackend:
    """Tasks on a Ray cluster (``local`` starts one on this machine)."""

    def __init__(self, address: str, threads: int):
        try:
            import ray
            from ray.util.queue import Queue
        except ImportError:
            raise KcapError(
                "--ray", "Ray is not installed; install it with: pip install 'kcap[ray]'"
            ) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        import logging

        ray.init(
            address=None if address == "local" else address,
            ignore_reinit_error=True,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        self.queue = Queue()
        self.remote = ray.remote(num_cpus=threads, max_retries=0)(_ray_task)

    def submit(self, fn: Callable[[dict], dict], task: dict) -> Any:
        return self.remote.remote(fn, task, self.queue)

    def wait(self, handles: list, timeout: float) -> list:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return done

    def result(self, handle: Any) -> dict:
        return self.ray.get(handle)

    def messages(self) -> list:
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    def broken(self, exc: BaseException) -> bool:
        return False

    def shutdown(self, *, abort: bool) -> None:
        if self.started:
            self.ray.shutdown()


# ------------------------------------------------------------------------------ driver


def default_threads(workers: int) -> int:
    from kcap.training.trainer import physical_cores

    return max(1, physical_cores() // max(1, workers))


def run_sweep(
    points: list[GridPoint],
    opts: SweepOptions,
    *,
    name: str = "sweep",
    execute: Callable[[dict], dict] = execute_point,
) -> SweepSummary:
    """Run every point not yet finished; returns counts (the store holds the results).

    ``execute`` runs in the worker (a top-level function, so that it can be pickled).
    """
    if opts.workers < 1:
        raise KcapError("--workers", f"must be at least 1; got {opts.workers}")
    t_start = time.time()
    summary = SweepSummary(total=len(points))
    threads = opts.threads or default_threads(opts.workers)
    cache = (opts.out / "datasets").resolve()
    store = ResultsStore(opts.db)
    pending = list(points)
    active: dict[Any, tuple[GridPoint, float]] = {}  # handle -> (point, started)
    view = _View(name, opts.progress, len(points))
    backend = None
    try:
        with view:
            while pending or active:
                while pending and len(active) < opts.workers:
                    point = pending.pop(0)
                    run_dir = run_dir_of(opts, point)
                    mode, why = _try_claim(store, point, run_dir, opts)
                    if mode is None:
                        summary.skipped[why] = summary.skipped.get(why, 0) + 1
                        view.skip()
                        continue
                    if backend is None:
                        backend = _make_backend(opts, threads)
                    task = {
                        "run_id": point.run_id,
                        "config": point.config.model_dump(),
                        "run_dir": str(run_dir),
                        "cache": str(cache),
                        "threads": threads,
                        "mode": mode,
                    }
                    active[backend.submit(execute, task)] = (point, time.time())
                    view.add(point)
                    summary.ran += 1
                if not active:
                    continue
                done = backend.wait(list(active), timeout=0.25)
                _drain(backend, store, view, summary)
                for handle in done:
                    point, _ = active.pop(handle)
                    try:
                        out = backend.result(handle)
                    except BaseException as exc:  # the run failed (or its worker died)
                        error = _error_text(exc, backend)
                        store.fail_run(point.run_id, error)
                        summary.failed += 1
                        summary.failures.append((point.name, error))
                        view.done(point, ok=False)
                        if backend.broken(exc):
                            backend.shutdown(abort=True)
                            backend = None
                            for other, _ in active.values():
                                store.fail_run(other.run_id, f"{INTERRUPTED}: worker pool broke")
                                pending.insert(0, other)
                            active.clear()
                        continue
                    store.finish_run(point.run_id, metrics=out["metrics"], timings=out["timings"])
                    store.update_run(point.run_id, params=out["params"])
                    summary.finished += 1
                    view.done(point, ok=True)
                view.heartbeat(store, opts.heartbeat_every)
    except BaseException as exc:
        for point, _ in active.values():
            store.fail_run(point.run_id, f"{INTERRUPTED}: {type(exc).__name__}")
        if backend is not None:
            backend.shutdown(abort=True)
            backend = None
        raise
    finally:
        if backend is not None:
            backend.shutdown(abort=False)
        store.close()
    summary.seconds = time.time() - t_start
    return summary


def _make_backend(opts: SweepOptions, threads: int):
    if opts.ray:
        return _RayBackend(opts.ray, threads)
    return _LocalBackend(opts.workers, threads)


def _error_text(exc: BaseException, backend) -> str:
    if backend.broken(exc):
        return f"{INTERRUPTED}: a worker process died ({exc})"
    cause = getattr(exc, "cause", None) or exc  # Ray wraps the task's exception
    text = f"{type(cause).__name__}: {cause}".strip()
    return text.splitlines()[0][:500] if text else type(cause).__name__


def _drain(backend, store: ResultsStore, view: _View, summary: SweepSummary) -> None:
    for kind, run_id, data in backend.messages():
        if kind == "started":
            store.update_run(run_id, params=data["params"], manifest=data["manifest"])
            summary.resumed += bool(data["resumed"])
        view.message(kind, run_id, data)


class _View:
    """One progress bar for the sweep and one per active run (rich), plus heartbeats."""

    def __init__(self, name: str, enabled: bool, total: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            disable=not enabled,
        )
        self.sweep = self.progress.add_task(f"[bold]sweep {name}", total=total, info="")
        self.tasks: dict[str, int] = {}
        self.steps: dict[str, tuple[int, int | None]] = {}
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.last_beat = time.time()

    def __enter__(self) -> _View:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def _sweep_info(self) -> None:
        c = self.counts
        info = f"{c['ok']} finished, {c['failed']} failed, {c['skipped']} skipped"
        self.progress.update(self.sweep, info=info, completed=c["ok"] + c["failed"] + c["skipped"])

    def skip(self) -> None:
        self.counts["skipped"] += 1
        self._sweep_info()

    def add(self, point: GridPoint) -> None:
        self.tasks[point.run_id] = self.progress.add_task(
            f"  {point.name}", total=None, info="starting"
        )
        self.steps[point.run_id] = (0, None)

    def message(self, kind: str, run_id: str, data: dict) -> None:
        task = self.tasks.get(run_id)
        if task is None:
            return
        if kind == "started":
            self.steps[run_id] = (data["step"], data["total_steps"])
            self.progress.update(
                task, total=data["total_steps"], completed=data["step"], info="training"
            )
        elif kind == "step":
            total = self.steps[run_id][1]
            self.steps[run_id] = (data["step"], total)
            loss = data.get("loss")
            self.progress.update(
                task, completed=data["step"], info=f"loss {loss:.3f}" if loss else "measuring"
            )

    def done(self, point: GridPoint, *, ok: bool) -> None:
        task = self.tasks.pop(point.run_id, None)
        self.steps.pop(point.run_id, None)
        if task is not None:
            self.progress.remove_task(task)
        self.counts["ok" if ok else "failed"] += 1
        self._sweep_info()

    def heartbeat(self, store: ResultsStore, every: float) -> None:
        """Touch the rows of active runs so other sweeps can tell them from dead ones."""
        if time.time() - self.last_beat < every:
            return
        self.last_beat = time.time()
        for run_id, (step, total) in self.steps.items():
            store.update_run(
                run_id,
                timings={"heartbeat": self.last_beat, "step": step, "total_steps": total},
            )


def describe_points(points: list[GridPoint], states: dict[str, str], cache: Path) -> list[dict]:
    """Rows for `kcap sweep --dry-run`: name, id, state, N, exposures, model, tokens if known."""
    rows = []
    for p in points:
        c = p.config
        key = dataset_key(c)
        tokens = None
        manifest = cache / key / "dataset" / "manifest.json" if key else None
        if manifest is not None and manifest.is_file():
            per_doc = json.loads(manifest.read_text())["vocab"]["mean_tokens_per_document"]
            tokens = int(per_doc * (c.dataset.n or 0) * c.training.exposures)
        rows.append(
            {
                "run_id": p.run_id,
                "name": p.name,
                "state": states[p.run_id],
                "n": c.dataset.n,
                "exposures": c.training.exposures,
                "model": c.model.preset,
                "person_exposures": (c.dataset.n or 0) * c.training.exposures,
                "tokens": tokens,
            }
        )
    return rows
