"""`kcap train` and `kcap measure`: train a run from a YAML config; measure any run directory.

A run has one writer: `kcap train` holds the run directory's lock and the run's claim in the
results store for as long as it trains; a run of the same config that is alive elsewhere (a
sweep point, another `kcap train`) is refused. SIGTERM or SIGINT stops it between steps with a
checkpoint, records it as interrupted and exits with 128 + the signal number, printing the
command that resumes it; a second signal stops it at once.

Under ``torchrun --nproc_per_node K -m kcap.cli.main train CONFIG --out RUN`` the K ranks train
the run together (`kcap.training.distributed`); rank 0 alone checks the run directory, holds
the lock and the store row, and prints; the other ranks train, and stop when rank 0 does.
"""

from __future__ import annotations

import json
import shlex
import socket
import time
from pathlib import Path

import typer
from rich.console import Console

from kcap.atomic import require_writable
from kcap.errors import KcapError
from kcap.experiments.store import DEFAULT_DB, ResultsStore
from kcap.experiments.sweep import INTERRUPTED, run_is_alive
from kcap.training import distributed, interrupt, runlock
from kcap.training.config import config_hash, load_config

err = Console(stderr=True)
DB = typer.Option(Path(DEFAULT_DB), "--db", help="SQLite results store.")


def train(
    config: Path = typer.Argument(
        ..., help="Run config (YAML: dataset, model, training, measurement)."
    ),
    out: Path = typer.Option(..., "--out", help="Run directory."),
    set_: list[str] = typer.Option([], "--set", help="Override a config value: key.sub=value."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR's checkpoint."),
    force: bool = typer.Option(False, "--force", help="Start over in a non-empty run directory."),
    db: Path = DB,
    json_out: bool = typer.Option(False, "--json", help="Print the final measurement as JSON."),
) -> None:
    """Train a model from scratch for E exposures, checkpointing, then measure its knowledge."""
    cfg = load_config(config, set_)
    world = distributed.from_env()
    main = world.is_main  # under torchrun, rank 0 checks the run directory
    if main and out.exists() and any(out.iterdir()) and not (resume or force):
        raise KcapError("--out", f"{out} is not empty (use --resume to continue or --force)")
    if main and resume:
        _check_resumable(cfg, out)
    sets = "".join(f" --set {shlex.quote(s)}" for s in set_)
    launch = "kcap"
    if world.active:  # resumed as it was launched (the local ranks of one machine)
        launch = f"torchrun --nproc_per_node {world.local_size} -m kcap.cli.main"
    hint = f"{launch} train {shlex.quote(str(config))} --out {shlex.quote(str(out))}{sets} --resume"
    try:
        result, summary = run_training(
            cfg, out, db=db, resume=resume, fresh=force and not resume, resume_hint=hint
        )
    finally:
        distributed.shutdown()
    if result is None:  # a rank other than 0
        return
    print_measurement(result.to_dict(), summary)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))


def _check_resumable(cfg, out: Path) -> None:
    """Refuse ``--resume`` before anything is written: ``out`` must be a run of this config
    with a checkpoint."""
    from kcap.training import checkpoint
    from kcap.training.trainer import run_config

    if not (out / "config.yaml").is_file():
        raise KcapError("--resume", f"{out} is not a kcap run directory (no config.yaml)")
    if config_hash(run_config(out).model_dump()) != config_hash(cfg.model_dump()):
        raise KcapError("--resume", f"{out} was trained with a different config")
    if not checkpoint.exists(out):
        raise KcapError("--resume", f"{out} has no checkpoint to resume from")


def run_training(
    cfg,
    out: Path,
    *,
    db: Path | None,
    resume: bool = False,
    fresh: bool = False,
    progress: bool = True,
    on_step=None,
    resume_hint: str | None = None,
):
    """Train one run, holding its directory's lock and its claim in the results store, which
    records status, params, metrics and timings. ``fresh``: clear the run directory first.

    A stop request ends the run with a checkpoint, the store row marked interrupted, one line
    on stderr saying how to resume (``resume_hint``) and exit code 128 + the signal number.
    """
    from kcap.training.trainer import Trainer, TrainingDiverged

    if not distributed.from_env().is_main:  # the Trainer joins the process group
        return _train_rank(cfg, out, resume=resume)
    run_id = config_hash(cfg.model_dump())  # the same for any number of ranks
    t0 = time.time()
    if db and not Path(db).is_file():
        require_writable(Path(db).parent, "--db")  # the store is opened after the run starts
    with runlock.RunLock(out), interrupt.handle_signals():
        if fresh:
            runlock.clear(out)
        if db and Path(db).is_file():  # refuse before anything is written
            with ResultsStore(db) as probe:
                _refuse_if_alive(probe, run_id, out)
        store = token = None
        try:
            beat = _Heartbeat(on_step)
            trainer = Trainer(cfg, out, progress=progress, on_step=beat)
            if db:
                store = ResultsStore(db)
                token = _claim(store, run_id, cfg, trainer, out)
                beat.attach(store, run_id, token)
            if resume and not trainer.load_checkpoint():
                raise KcapError("--resume", f"{out} has no checkpoint to resume from")
            result = trainer.fit()
            summary = trainer.summary()
            if store:
                timings = {
                    "wall_s": time.time() - t0 + trainer.resumed_seconds,  # every leg
                    "train_s": trainer.train_seconds,
                    "tokens_per_s": summary["tokens_per_s"],
                    "host": socket.gethostname(),
                }
                if trainer.world.active:  # one run on K ranks, K x training.batch_size a step
                    timings["world_size"] = trainer.world.size
                    timings["global_batch_size"] = trainer.global_batch
                store.finish_run(run_id, metrics=result.to_dict(), timings=timings, token=token)
            return result, summary
        except (interrupt.RunInterrupted, interrupt.Aborted) as e:
            at = f" at step {e.step:,}" if getattr(e, "step", None) is not None else ""
            saved = "checkpoint saved" if at else "stopped at once, no checkpoint"
            if token:
                store.fail_run(run_id, f"{INTERRUPTED}: {e.reason}{at}", token=token)
            typer.echo(f"Interrupted by {e.reason}{at}, {saved}; resume: {resume_hint}", err=True)
            raise typer.Exit(e.exit_code) from None
        except TrainingDiverged as e:
            if token:
                store.fail_run(run_id, f"TrainingDiverged: {e}", token=token)
            typer.echo(f"Error: training: {e}", err=True)
            raise typer.Exit(1) from None
        except BaseException as e:
            if token:
                store.fail_run(run_id, f"{type(e).__name__}: {e}", token=token)
            raise
        finally:
            if store:
                store.close()


def _train_rank(cfg, out: Path, *, resume: bool):
    """A rank other than 0 under torchrun: train alongside rank 0, write nothing, print
    nothing; returns ``(None, summary)``. A stop or a diverged run exits as rank 0 does."""
    from kcap.training.trainer import Trainer, TrainingDiverged

    with interrupt.handle_signals():
        try:
            trainer = Trainer(cfg, out, progress=False)
            if resume and not trainer.load_checkpoint():
                raise KcapError("--resume", f"{out} has no checkpoint to resume from")
            trainer.fit()
            return None, trainer.summary()
        except (interrupt.RunInterrupted, interrupt.Aborted) as e:
            raise typer.Exit(e.exit_code) from None
        except TrainingDiverged:
            raise typer.Exit(1) from None


def _refuse_if_alive(store: ResultsStore, run_id: str, out: Path) -> None:
    """Refuse a run of a config that is training elsewhere (a row naming our own run
    directory is dead: we hold that directory's lock)."""
    rec = store.get(run_id)
    if rec is None or rec.status != "running" or rec.run_dir == str(out.resolve()):
        return
    if run_is_alive(rec):
        raise KcapError(
            "CONFIG",
            f"run {run_id} of this config is already training in {rec.run_dir} "
            f"on {rec.host}; wait for it, or stop it first",
        )


def _claim(store: ResultsStore, run_id: str, cfg, trainer, out: Path) -> str:
    """Claim the run in the store, taking over a row whose process is gone."""
    claim = {
        "name": cfg.name,
        "config": cfg.model_dump(),
        "manifest": trainer.dataset.manifest,
        "run_dir": str(out.resolve()),
        "params": trainer.params,
    }
    for _ in range(2):
        token = store.claim(run_id, allow_finished=True, **claim)
        if token:
            return token
        _refuse_if_alive(store, run_id, out)  # it started meanwhile
        rec = store.get(run_id)
        if rec is not None and rec.status == "running":  # its process is gone
            store.fail_if_unchanged(run_id, rec.updated_at, f"{INTERRUPTED} (process gone)")
    raise KcapError("CONFIG", f"run {run_id} could not be claimed in {store.path}")


class _Heartbeat:
    """The trainer's ``on_step``: touches the run's store row every ``every`` seconds (so a
    sweep on another host can tell a live run from a dead one), then calls ``on_step``."""

    def __init__(self, on_step=None, every: float = 20.0):
        self.on_step, self.every = on_step, every
        self.store = self.run_id = self.token = None
        self.last = time.time()

    def attach(self, store: ResultsStore, run_id: str, token: str) -> None:
        self.store, self.run_id, self.token = store, run_id, token

    def __call__(self, record: dict) -> None:
        now = time.time()
        if self.token and now - self.last >= self.every:
            self.last = now
            self.store.update_run(self.run_id, token=self.token, timings={"heartbeat": now})
        if self.on_step is not None:
            self.on_step(record)


def print_measurement(m: dict, summary: dict | None = None) -> None:
    from rich.table import Table

    from kcap.experiments.run_report import is_random_strings, measurement_rows, summary_rows

    rows = measurement_rows(m)
    if not is_random_strings(m):
        rows.append(("p1 / p2 (nats)", f"{m['p1']:.3f} / {m['p2']:.3f}"))
    if m["clipped"]:
        rows.append(("clipped at 0", ", ".join(m["clipped"])))
    if summary:
        rows += summary_rows(summary)
    table = Table(title="knowledge stored", show_header=False)
    for label, value in rows:
        table.add_row(label, value)
    console = Console()
    console.print(table)
    for note in m.get("notes") or []:
        console.print(f"note: {note}")


def measure_cmd(
    run_dir: Path = typer.Argument(None, help="A kcap run directory (or use --hf and --dataset)."),
    hf: Path = typer.Option(None, "--hf", help="A local Hugging Face causal LM checkpoint."),
    dataset_dir: Path = typer.Option(None, "--dataset", help="The dataset, with --hf."),
    max_people: int = typer.Option(None, "--max-people", help="Measure a random subset."),
    eval_seed: int = typer.Option(None, "--eval-seed", help="Evaluation seed (default: config)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Documents per forward pass (--hf)."),
    json_out: bool = typer.Option(False, "--json", help="Print the measurement as JSON."),
) -> None:
    """Measure the bits a model stores, its capacity ratio and recall accuracy.

    Either a kcap run directory, or any local Hugging Face causal LM (``--hf PATH``) that uses
    the dataset's tokenizer (``--dataset DIR``).
    """
    from kcap.data.dataset import DEFAULT_EVAL_SEED, load_dataset
    from kcap.measure import measure

    if (run_dir is None) == (hf is None):
        raise KcapError("RUN_DIR", "give a run directory, or --hf PATH with --dataset DIR")
    if hf is not None:
        from kcap.models.external import count_hf_parameters, load_causal_lm

        if dataset_dir is None:
            raise KcapError("--dataset", "--hf needs the dataset the model was trained on")
        dataset = load_dataset(dataset_dir)
        model = load_causal_lm(hf)
        if model.vocab_size < dataset.tokenizer.vocab_size:
            raise KcapError(
                "--hf",
                f"vocabulary {model.vocab_size} is smaller than the "
                f"dataset tokenizer's {dataset.tokenizer.vocab_size}",
            )
        counts = count_hf_parameters(model, dataset.manifest["vocab"]["used_tokens"])
        params = {
            "total": counts.total,
            "P": counts.P,
            "non_embedding": counts.non_embedding,
            "active": counts.active,
        }
        seed = DEFAULT_EVAL_SEED if eval_seed is None else eval_seed
    else:
        from kcap.training.trainer import load_run

        cfg, dataset, model, params = load_run(run_dir)
        seed = cfg.measurement.eval_seed if eval_seed is None else eval_seed
        batch_size = cfg.measurement.batch_size
    result = measure(
        model,
        dataset,
        P_count=params["P"],
        params=params,
        eval_seed=seed,
        max_people=max_people,
        batch_size=batch_size,
    )
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_measurement(result.to_dict())
