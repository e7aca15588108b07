"""`kcap train` and `kcap measure`: train a run from a YAML config; measure any run directory."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import typer
from rich.console import Console

from kcap.errors import KcapError
from kcap.experiments.store import DEFAULT_DB, ResultsStore
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
    if out.exists() and any(out.iterdir()) and not (resume or force):
        raise KcapError("--out", f"{out} is not empty (use --resume to continue or --force)")
    if force and out.exists() and not resume:
        shutil.rmtree(out)
    result, summary = run_training(cfg, out, db=db, resume=resume)
    print_measurement(result.to_dict(), summary)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))


def run_training(
    cfg, out: Path, *, db: Path | None, resume: bool = False, progress: bool = True, on_step=None
):
    """Train with the results store recording status, params, metrics and timings."""
    from kcap.training.trainer import Trainer

    run_id = config_hash(cfg.model_dump())
    store = ResultsStore(db) if db else None
    t0 = time.time()
    try:
        trainer = Trainer(cfg, out, progress=progress, on_step=on_step)
        if store:
            store.start_run(
                run_id,
                name=cfg.name,
                config=cfg.model_dump(),
                manifest=trainer.dataset.manifest,
                run_dir=str(out.resolve()),
                params=trainer.params,
            )
        if resume and not trainer.load_checkpoint():
            raise KcapError("--resume", f"{out} has no checkpoint to resume from")
        result = trainer.fit()
        summary = trainer.summary()
        if store:
            timings = {
                "wall_s": time.time() - t0,
                "train_s": trainer.train_seconds,
                "tokens_per_s": summary["tokens_per_s"],
                "host": socket.gethostname(),
            }
            store.finish_run(run_id, metrics=result.to_dict(), timings=timings)
        return result, summary
    except BaseException as e:
        if store and store.get(run_id) is not None:
            store.fail_run(run_id, f"{type(e).__name__}: {e}")
        raise
    finally:
        if store:
            store.close()


def print_measurement(m: dict, summary: dict | None = None) -> None:
    from rich.table import Table

    from kcap.experiments.run_report import measurement_rows, summary_rows

    rows = [*measurement_rows(m), ("p1 / p2 (nats)", f"{m['p1']:.3f} / {m['p2']:.3f}")]
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
