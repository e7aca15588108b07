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
- ``running``: skip (another process has it) -- unless that process is gone and the run
  directory is ours: then the run is resumed from its last checkpoint. A run on this host is
  gone when nobody holds its directory's lock (`kcap.training.runlock`); on another host, when
  its heartbeat is older than ``stale_after``;
- ``failed`` because it was interrupted (a signal, a killed worker): resumed from its checkpoint;
- ``failed`` with an error: skipped, or re-run from scratch with ``retry_failed``.

One writer per run: a worker holds the run directory's lock while it trains there, and the
driver writes a run's row only with the token of its own claim (`ResultsStore.claim`), so a run
reclaimed by another sweep is never written by two.

Stopping: SIGTERM or SIGINT to the driver stops the sweep -- no new point starts, every worker
gets SIGTERM, checkpoints and stops, and its run is recorded as interrupted; the next sweep
resumes it. A second signal stops everything at once. A worker whose driver is gone (``kill
-9``) stops by itself (`kcap.training.interrupt.watch_parent`).

Each worker process uses ``threads`` torch threads (cores // workers by default).

Packs (``pack`` > 1, `kcap sweep --pack K`): a worker trains up to K points that can share a
model (`kcap.training.packed.pack_key`: same shape, batch, window, device) as one packed model,
taken in grid order. Everything else is per point: each is claimed, locked, checkpointed,
resumed and recorded on its own, exactly as when it runs alone (a packed run's row differs
only by ``timings.packed_with``); a point that cannot pack runs alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kcap.errors import KcapError
from kcap.experiments.analysis import history_file
from kcap.experiments.archive import export_records
from kcap.experiments.grid import GridPoint, dataset_key
from kcap.experiments.store import INTERRUPTED, LostClaim, ResultsStore, RunRecord
from kcap.training import interrupt, runlock

__all__ = [
    "INTERRUPTED",
    "SweepOptions",
    "SweepSummary",
    "ensure_dataset",
    "execute_pack",
    "execute_point",
    "point_states",
    "run_is_alive",
    "run_sweep",
]

_MESSAGE_EVERY_S = 0.5
CLAIM_GRACE_S = 30.0  # a worker takes the run lock within this long of the driver's claim
STALE_AFTER_S = 300.0


@dataclass
class SweepOptions:
    db: Path
    out: Path
    workers: int = 1
    threads: int | None = None  # torch threads per worker; None: cores // workers
    retry_failed: bool = False
    ray: str | None = None  # a Ray address, or "local" to start one here
    progress: bool = True
    stale_after: float = STALE_AFTER_S  # no heartbeat for this long: a remote run is dead
    claim_grace: float = CLAIM_GRACE_S  # unlocked this long after its claim: a local run is dead
    heartbeat_every: float = 20.0
    stop_grace: float = 120.0  # after a stop signal, how long workers get to checkpoint
    pack: int = 1  # > 1: train up to this many points of one shape as one packed model
    export: Path | None = None  # JSON lines of the store's finished runs, after each finish


@dataclass
class SweepSummary:
    total: int = 0
    ran: int = 0
    finished: int = 0
    failed: int = 0
    resumed: int = 0
    interrupted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # by reason
    failures: list[tuple[str, str]] = field(default_factory=list)  # (name, error)
    seconds: float = 0.0
    stopped_by: str | None = None  # the signal that stopped the sweep
    exit_code: int = 0

    def line(self, name: str) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()) if n)
        stopped = f"; stopped by {self.stopped_by}" if self.stopped_by else ""
        interrupted = f", {self.interrupted} interrupted" if self.interrupted else ""
        return (
            f"sweep {name}: {self.total} runs; ran {self.ran} ({self.finished} finished, "
            f"{self.failed} failed{interrupted}, {self.resumed} resumed); skipped "
            f"{skipped or 'none'}; {self.seconds:.0f} s{stopped}"
        )


def run_dir_of(opts: SweepOptions, point: GridPoint) -> Path:
    return (opts.out / "runs" / point.run_id).resolve()


# ------------------------------------------------------------------------------ decisions


def point_states(points: list[GridPoint], store: ResultsStore) -> dict[str, str]:
    """What the store says of each point: new, finished, running, interrupted or failed."""
    states = {}
    for p in points:
        rec = store.get(p.run_id)
        states[p.run_id] = "new" if rec is None else rec.state
    return states


def _packable(point: GridPoint) -> bool:
    """Whether ``point`` may train in a pack (`pack_key`); a mixture of experts never does."""
    from kcap.training.packed import pack_key  # torch: not needed before the first run

    return pack_key(point.config) is not None


def run_is_alive(
    rec: RunRecord, stale_after: float = STALE_AFTER_S, claim_grace: float = CLAIM_GRACE_S
) -> bool:
    """Whether the process that holds a "running" row may still be at work.

    On this host the run directory's lock answers exactly (a process holds it while it trains;
    the lock dies with it), after a grace period for a worker that has not taken it yet; for a
    run on another host, a heartbeat within ``stale_after`` seconds counts as alive.
    """
    age = time.time() - rec.updated_at
    if rec.run_dir and runlock.holder(Path(rec.run_dir)) is not None:
        return True
    if rec.host == socket.gethostname():
        return age <= claim_grace
    return age <= stale_after


def _try_claim(store: ResultsStore, point: GridPoint, run_dir: Path, opts: SweepOptions):
    """Claim ``point`` for this sweep: ``(mode, token, None)`` with mode "resume" or "fresh",
    or ``(None, None, reason)`` to skip it."""
    rec = store.get(point.run_id)
    mode = "resume"
    if rec is not None:
        state = rec.state
        if state == "finished":
            return None, None, "finished"
        if state == "running":
            ours = rec.run_dir == str(run_dir)
            alive = run_is_alive(rec, opts.stale_after, opts.claim_grace)
            if not (ours and not alive and _mark_gone(store, rec)):
                return None, None, "running elsewhere"
        elif state == "failed":
            if not opts.retry_failed:
                return None, None, "failed (use --retry-failed)"
            mode = "fresh"
    token = store.claim(
        point.run_id, name=point.name, config=point.config.model_dump(), run_dir=str(run_dir)
    )
    return (mode, token, None) if token else (None, None, "running elsewhere")


def _mark_gone(store: ResultsStore, rec: RunRecord) -> bool:
    """Mark a running row whose process is gone interrupted, if nobody touched it since."""
    return store.fail_if_unchanged(rec.run_id, rec.updated_at, f"{INTERRUPTED} (process gone)")


# ------------------------------------------------------------------------------ worker side

_QUEUE: Any = None
_BUSY: list[bool] = [False]


#: Modules a run reaches only when it first measures or packs: imported when a worker starts,
#: so that kcap's source edited during a long sweep (an editable install) cannot give a worker
#: the new version of one module beside the old version of another, which fails hours in.
RUN_MODULES = (
    "kcap.training.trainer",
    "kcap.training.packed",
    "kcap.measure.knowledge",
    "kcap.measure.memorization",
    "kcap.models.external",
)


def import_run_modules() -> None:
    """Import every module of `RUN_MODULES` now (a worker's code is fixed when it starts)."""
    import importlib

    for name in RUN_MODULES:
        importlib.import_module(name)


def _init_worker(queue: Any, parent: int) -> None:
    """Worker process setup: the run's modules (`import_run_modules`); the progress queue;
    SIGTERM (from the driver) stops the run with a checkpoint; Ctrl-C is left to the driver (a
    terminal sends it to the whole group); and the worker stops by itself when the driver is
    gone."""
    global _QUEUE
    import_run_modules()
    _QUEUE = queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, interrupt.stop_handler())
    interrupt.watch_parent(parent, busy=lambda: _BUSY[0])


def _run_task(execute: Callable[[dict], dict], task: dict) -> dict:
    """Run ``execute(task)`` in a worker holding the lock of its run directory (of each
    member's, for a pack)."""
    _BUSY[0] = True
    try:
        with contextlib.ExitStack() as locks:
            for member in task.get("members", [task]):
                locks.enter_context(runlock.RunLock(member["run_dir"], field="run_dir"))
            return execute(task)
    finally:
        _BUSY[0] = False


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


def _start_member(task: dict):
    """Set up one point's run in a worker: its run directory (resumed from a checkpoint when
    ``mode`` is "resume" and there is one), the shared dataset, and its `Trainer`, which posts
    progress to the driver. Returns ``(trainer, resumed)``."""
    from kcap.experiments.grid import GridPoint
    from kcap.training import checkpoint
    from kcap.training.config import RunConfig
    from kcap.training.trainer import Trainer

    run_id, run_dir = task["run_id"], Path(task["run_dir"])
    cfg = RunConfig.model_validate(task["config"])
    point = GridPoint(cfg, run_id, {})
    try:
        resume = task["mode"] == "resume" and checkpoint.exists(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            runlock.clear(run_dir)  # start over (the caller holds the lock)
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
    except interrupt.RunInterrupted:
        raise
    except BaseException:
        _write_error(run_dir)
        raise
    post(
        "started",
        run_id,
        total_steps=trainer.total_steps,
        step=trainer.step,
        resumed=resume,
        params=trainer.params,
        manifest=trainer.dataset.manifest,
    )
    return trainer, resume


def _write_error(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").write_text(traceback.format_exc())


def _member_output(trainer, result, started: float, resumed: bool) -> dict:
    """What the driver records in the store for a finished run. ``wall_s`` spans every leg of
    a resumed run: this leg's wall clock plus the training time of the legs before it."""
    summary = trainer.summary()
    metrics = result.to_dict()
    metrics["history"] = list(history_file(trainer.run_dir))  # in the store for remote runs
    timings = {
        "wall_s": time.time() - started + trainer.resumed_seconds,
        "train_s": summary["train_seconds"],
        "tokens_per_s": summary["tokens_per_s"],
        "steps": summary["steps"],
        "tokens": summary["tokens"],
        "exposures": summary["exposures"],
        "threads": summary["threads"],
        "device": summary["device"],
        "host": socket.gethostname(),
        "resumed": resumed,
    }
    if summary.get("packed_with"):
        timings["packed_with"] = summary["packed_with"]
    return {"metrics": metrics, "timings": timings, "params": trainer.params}


def execute_point(task: dict) -> dict:
    """Train and measure one point in a worker; returns what the driver records in the store.

    ``task``: run_id, config (dict), run_dir, cache (dataset cache), threads, mode
    ("resume": continue from a checkpoint in run_dir if there is one; "fresh": start over).
    """
    import torch

    torch.set_num_threads(task["threads"])
    t0 = time.time()
    trainer, resumed = _start_member(task)
    try:
        result = trainer.fit()
    except interrupt.RunInterrupted:
        raise
    except BaseException:
        _write_error(trainer.run_dir)
        raise
    return _member_output(trainer, result, t0, resumed)


def execute_pack(task: dict) -> dict:
    """Train the points ``task["members"]`` (tasks as for `execute_point`) as packs
    (`kcap.training.packed`); returns ``{"members": {run_id: output or {"error": text}}}``.
    A member that fails to start or stops with an error fails alone; a stop request
    checkpoints every member and raises `RunInterrupted` (all are interrupted)."""
    import torch

    from kcap.training.packed import train_packed

    torch.set_num_threads(task["threads"])
    t0 = time.time()
    out: dict[str, dict] = {}
    trainers = {}
    for member in task["members"]:
        try:
            trainers[member["run_id"]] = _start_member(member)
        except (interrupt.RunInterrupted, interrupt.Aborted):
            raise
        except Exception as exc:  # this member fails; the others still train
            out[member["run_id"]] = {"error": _error_line(exc)}
    by_dir = {t.run_dir.name: (run_id, t, r) for run_id, (t, r) in trainers.items()}

    def left(name: str, outcome) -> None:  # a member left the pack: the driver records it now
        run_id, trainer, resumed = by_dir[name]
        if outcome.error is not None:
            (trainer.run_dir / "error.txt").write_text(f"{_error_line(outcome.error)}\n")
            out[run_id] = {"error": _error_line(outcome.error)}
        else:
            out[run_id] = _member_output(trainer, outcome.result, t0, resumed)
        post("left", run_id, output=out[run_id])

    train_packed([t for t, _ in trainers.values()], left)
    return {"members": out}


def _error_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:500]


def _ray_task(fn: Callable[[dict], dict], task: dict, queue: Any) -> dict:
    global _QUEUE
    import_run_modules()
    _QUEUE = queue
    return _run_task(fn, task)


# ------------------------------------------------------------------------------ backends


class _LocalBackend:
    """A pool of spawned worker processes on this machine."""

    def __init__(self, workers: int, threads: int):
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.pool = cf.ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(self.queue, os.getpid())
        )

    def submit(self, fn: Callable[[dict], dict], task: dict) -> Any:
        return self.pool.submit(_run_task, fn, task)

    def stop(self, handles: list) -> None:
        """Ask every worker to checkpoint and stop (SIGTERM; they ignore SIGINT)."""
        for proc in list(getattr(self.pool, "_processes", {}).values()):
            with contextlib.suppress(ProcessLookupError, AttributeError):
                os.kill(proc.pid, signal.SIGTERM)

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
                proc.kill()
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

    def stop(self, handles: list) -> None:
        """Cancel the running tasks (their runs resume from their last periodic checkpoint)."""
        for handle in handles:
            self.ray.cancel(handle)

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

    ``execute`` runs in the worker (a top-level function, so that it can be pickled). A stop
    signal ends the sweep early with its runs interrupted: ``summary.stopped_by`` names it.
    """
    if opts.workers < 1:
        raise KcapError("--workers", f"must be at least 1; got {opts.workers}")
    if opts.pack < 1:
        raise KcapError("--pack", f"must be at least 1; got {opts.pack}")
    with interrupt.handle_signals():
        return _Driver(points, opts, name, execute).run()


class _Driver:
    """The sweep's driver loop: claims points, hands them to workers, records what returns."""

    def __init__(self, points, opts: SweepOptions, name: str, execute) -> None:
        self.opts, self.name, self.execute = opts, name, execute
        self.summary = SweepSummary(total=len(points))
        self.threads = opts.threads or default_threads(opts.workers)
        self.cache = (opts.out / "datasets").resolve()
        self.pending = list(points)
        # handle -> its points and their claim tokens (several for a pack)
        self.active: dict[Any, list[tuple[GridPoint, str]]] = {}
        self.backend = None
        self.stopping_since: float | None = None

    def run(self) -> SweepSummary:
        t_start = time.time()
        store = ResultsStore(self.opts.db)
        view = _View(self.name, self.opts.progress, len(self.pending))
        try:
            with view:
                self._loop(store, view)
        except BaseException as exc:  # a second signal (Aborted), or a bug: stop everything
            self._abandon(store, exc)
            raise
        finally:
            if self.backend is not None:
                self.backend.shutdown(abort=False)
            store.close()
        self.summary.seconds = time.time() - t_start
        return self.summary

    def _loop(self, store: ResultsStore, view: _View) -> None:
        opts, summary = self.opts, self.summary
        while self.pending or self.active:
            stop = interrupt.pending()
            if stop is not None and self.stopping_since is None:
                self._stop(stop)
            while self.stopping_since is None and self.pending and len(self.active) < opts.workers:
                self._submit(store, view, self._next_job())
            if not self.active:
                if self.stopping_since is not None:
                    break
                continue
            if (
                self.stopping_since is not None
                and time.time() - self.stopping_since > opts.stop_grace
            ):
                raise interrupt.Aborted(summary.stopped_by or "stop", summary.exit_code)
            done = self.backend.wait(list(self.active), timeout=0.25)
            self._drain(store, view)
            for handle in done:
                self._record(store, view, handle)
            view.heartbeat(store, opts.heartbeat_every, self.tokens)

    def tokens(self) -> dict[str, str]:
        return {point.run_id: token for job in self.active.values() for point, token in job}

    def _next_job(self) -> list[GridPoint]:
        """The next pending point, with (``--pack K``) up to K - 1 more that can share its pack."""
        from kcap.training.packed import pack_key  # torch: not needed before the first run

        first = self.pending.pop(0)
        key = pack_key(first.config) if self.opts.pack > 1 else None
        if key is None:
            return [first]
        job = [first]
        for point in list(self.pending):
            if len(job) == self.opts.pack:
                break
            if pack_key(point.config) == key:
                job.append(point)
                self.pending.remove(point)
        return job

    def _submit(self, store: ResultsStore, view: _View, points: list[GridPoint]) -> None:
        """Claim ``points`` and hand those claimed to a worker: one run, or one pack."""
        tasks, claimed = [], []
        for point in points:
            run_dir = run_dir_of(self.opts, point)
            mode, token, why = _try_claim(store, point, run_dir, self.opts)
            if mode is None:
                self.summary.skipped[why] = self.summary.skipped.get(why, 0) + 1
                view.skip()
                continue
            tasks.append(
                {
                    "run_id": point.run_id,
                    "config": point.config.model_dump(),
                    "run_dir": str(run_dir),
                    "cache": str(self.cache),
                    "threads": self.threads,
                    "mode": mode,
                }
            )
            claimed.append((point, token))
        if not claimed:
            return
        if self.backend is None:
            self.backend = _make_backend(self.opts, self.threads)
        if len(claimed) == 1 and (self.opts.pack <= 1 or not _packable(claimed[0][0])):
            handle = self.backend.submit(self.execute, tasks[0])
        else:  # a pack, even of one point left over: the same code path for every packable run
            job = {"members": tasks, "threads": self.threads}
            handle = self.backend.submit(execute_pack, job)
        self.active[handle] = claimed
        for point, _ in claimed:
            view.add(point)
        self.summary.ran += len(claimed)

    def _record(self, store: ResultsStore, view: _View, handle: Any) -> None:
        """Record a finished handle: each of its runs finished, failed, or was interrupted."""
        job = self.active.pop(handle)
        try:
            out = self.backend.result(handle)
        except BaseException as exc:  # the run failed, was interrupted, or its worker died
            error = _error_text(exc, self.backend)
            for point, token in job:
                self._record_failure(store, view, point, token, error)
            if self.backend.broken(exc):
                self.backend.shutdown(abort=True)
                self.backend = None
                for other_job in self.active.values():
                    for other, other_token in other_job:
                        error = f"{INTERRUPTED}: worker pool broke"
                        _write(store.fail_run, other.run_id, error, token=other_token)
                        self.pending.insert(0, other)
                self.active.clear()
            return
        # a pack's members that left it early were recorded then, and are no longer in ``job``
        members = out["members"] if "members" in out else {job[0][0].run_id: out}
        for point, token in job:
            result = members.get(point.run_id, {"error": "the pack returned no result for it"})
            if "error" in result:
                self._record_failure(store, view, point, token, result["error"])
            else:
                self._record_success(store, view, point, token, result)

    def _drain(self, store: ResultsStore, view: _View) -> None:
        """Workers' messages: a run started (its parameters and manifest go to the store), or a
        packed member left its pack (recorded now, as a run alone is when it ends, rather than
        when the whole pack returns, hours later)."""
        for kind, run_id, data in self.backend.messages():
            if kind == "started":
                store.update_run(run_id, params=data["params"], manifest=data["manifest"])
                self.summary.resumed += bool(data["resumed"])
            elif kind == "left":
                self._record_left(store, view, run_id, data["output"])
            view.message(kind, run_id, data)

    def _record_left(self, store, view, run_id: str, out: dict) -> None:
        """Record a member that left its pack, and take it out of the pack's job."""
        for job in self.active.values():
            for i, (point, token) in enumerate(job):
                if point.run_id == run_id:
                    del job[i]
                    if "error" in out:
                        self._record_failure(store, view, point, token, out["error"])
                    else:
                        self._record_success(store, view, point, token, out)
                    return

    def _record_failure(self, store, view, point: GridPoint, token: str, error: str) -> None:
        _write(store.fail_run, point.run_id, error, token=token)
        if error.startswith(INTERRUPTED):
            self.summary.interrupted += 1
        else:
            self.summary.failed += 1
            self.summary.failures.append((point.name, error))
        view.done(point, ok=False)

    def _record_success(self, store, view, point: GridPoint, token: str, out: dict) -> None:
        ok = _write(
            store.finish_run,
            point.run_id,
            metrics=out["metrics"],
            timings=out["timings"],
            token=token,
        )
        if ok:
            store.update_run(point.run_id, token=token, params=out["params"])
            self.summary.finished += 1
            if self.opts.export is not None:  # a study's record survives this machine
                export_records(store.list_runs("finished"), self.opts.export)
        else:
            lost = self.summary.skipped.get("lost its claim", 0)
            self.summary.skipped["lost its claim"] = lost + 1
        view.done(point, ok=ok)

    def _stop(self, stop: tuple[str, int]) -> None:
        """The first stop signal: start nothing new, ask every worker to checkpoint and stop."""
        self.summary.stopped_by, self.summary.exit_code = stop
        self.stopping_since = time.time()
        self.pending.clear()
        if self.backend is not None:
            self.backend.stop(list(self.active))

    def _abandon(self, store: ResultsStore, exc: BaseException) -> None:
        """Stop at once: every active run recorded interrupted, every worker killed."""
        reason = getattr(exc, "reason", type(exc).__name__)
        for job in self.active.values():
            for point, token in job:
                _write(store.fail_run, point.run_id, f"{INTERRUPTED}: {reason}", token=token)
        if self.backend is not None:
            self.backend.shutdown(abort=True)
            self.backend = None


def _write(method: Callable, *args: Any, **kwargs: Any) -> bool:
    """A store write on behalf of a claim; False when the claim was lost to another sweep."""
    try:
        method(*args, **kwargs)
        return True
    except LostClaim:
        return False


def _make_backend(opts: SweepOptions, threads: int):
    if opts.ray:
        return _RayBackend(opts.ray, threads)
    return _LocalBackend(opts.workers, threads)


def _error_text(exc: BaseException, backend) -> str:
    if backend.broken(exc):
        return f"{INTERRUPTED}: a worker process died ({exc})"
    cause = getattr(exc, "cause", None) or exc  # Ray wraps the task's exception
    if isinstance(cause, (interrupt.RunInterrupted, interrupt.Aborted)):
        return f"{INTERRUPTED}: {cause.reason}" + (
            f" at step {cause.step:,}" if getattr(cause, "step", None) is not None else ""
        )
    text = f"{type(cause).__name__}: {cause}".strip()
    return text.splitlines()[0][:500] if text else type(cause).__name__


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

    def heartbeat(
        self, store: ResultsStore, every: float, tokens: Callable[[], dict[str, str]]
    ) -> None:
        """Touch the rows of active runs (with their claims' ``tokens()``) so other sweeps can
        tell them from dead ones."""
        if time.time() - self.last_beat < every:
            return
        self.last_beat = time.time()
        held = tokens()
        for run_id, (step, total) in self.steps.items():
            timings = {"heartbeat": self.last_beat, "step": step, "total_steps": total}
            _write(store.update_run, run_id, token=held.get(run_id), timings=timings)


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
