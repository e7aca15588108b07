"""`kcap extract RUN_DIR`: the knowledge-extraction probe (`kcap.measure.extract`) on a trained
run: fine-tune a copy of the model on the QA pairs of half the people, answer the other half's
questions, and report memorisable vs extractable accuracy per attribute, with chance levels.

The run's checkpoint is only read. The result goes to ``RUN_DIR/extract.json`` (written
atomically; the latest probe of the run) and to the results store (``--db``), in its
``extractions`` table keyed by the run's id and the settings' hash, where `kcap report` finds
it. Memorisable accuracy is the run's own measurement (``RUN_DIR/measure.json``), or, for a run
that has none yet, the measure run now with the run's measurement settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer
from rich.console import Console
from rich.table import Table

from kcap.atomic import require_writable, write_text_atomic
from kcap.cli.train import DB
from kcap.errors import require
from kcap.experiments.store import ResultsStore
from kcap.measure.extract import ExtractSettings
from kcap.progress import progress_bar

EXTRACT = "extract.json"
DEVICES = ("auto", "cpu", "cuda")
err = Console(stderr=True)
_DEFAULTS = ExtractSettings()


def extract_cmd(
    run_dir: Path = typer.Argument(..., help="A trained kcap run directory (bioS, bioR, bioD)."),
    method: str = typer.Option(
        _DEFAULTS.method, "--method", help="lora (adapters; the paper's) or full fine-tuning."
    ),
    rank: int = typer.Option(
        _DEFAULTS.qv_rank, "--rank", help="LoRA rank r on the attention's query and value maps."
    ),
    embedding_rank: int = typer.Option(
        _DEFAULTS.embedding_rank,
        "--embedding-rank",
        help="LoRA rank r' on the token embedding (0: none; the paper tried 8-128).",
    ),
    epochs: float = typer.Option(
        _DEFAULTS.epochs, "--epochs", help="Passes over the fine-tuning QA pairs."
    ),
    min_steps: int = typer.Option(
        _DEFAULTS.min_steps, "--min-steps", help="At least this many optimizer steps."
    ),
    steps: int = typer.Option(
        None, "--steps", help="Exactly this many optimizer steps (overrides --epochs)."
    ),
    lr: float = typer.Option(_DEFAULTS.lr, "--lr", help="Peak lr (linear decay to 0)."),
    weight_decay: float = typer.Option(_DEFAULTS.weight_decay, "--weight-decay"),
    batch_size: int = typer.Option(_DEFAULTS.batch_size, "--batch-size", help="QA pairs a step."),
    seed: int = typer.Option(_DEFAULTS.seed, "--seed", help="Split, adapters and QA order."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    db: Path = DB,
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Fine-tune on half the people's QA pairs; exact-match the other half's answers."""
    settings = ExtractSettings(
        method=method,  # type: ignore[arg-type]
        embedding_rank=embedding_rank,
        qv_rank=rank,
        epochs=epochs,
        min_steps=min_steps,
        steps=steps,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
    ).check()
    require(device in DEVICES, "--device", f"must be one of {', '.join(DEVICES)}; got {device!r}")
    require(
        device != "cuda" or torch.cuda.is_available(),
        "--device",
        "cuda requested but no CUDA device is available",
    )
    result = extract_run(run_dir, settings, db=db, device=device, progress=not json_out)
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        print_extraction(result)


def extract_run(
    run_dir: Path,
    settings: ExtractSettings,
    *,
    db: Path | None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Probe one run, record it (store row, then RUN_DIR/extract.json); returns the result."""
    from kcap.measure.extract import check_questions, extract, supported
    from kcap.training.config import config_hash
    from kcap.training.trainer import MEASURE, load_run, physical_cores, resolve_device

    run_dir = Path(run_dir)
    cfg, dataset, model, params = load_run(run_dir)  # refuses a directory that is no run
    supported(dataset)
    check_questions(dataset)
    require_writable(run_dir, "RUN_DIR")
    if db is not None:
        if Path(db).is_file():  # a store kcap cannot use fails here, before any work
            ResultsStore(db).close()
        else:
            require_writable(Path(db).parent, "--db")
    torch.set_num_threads(cfg.training.threads or physical_cores())
    measured = run_dir / MEASURE
    memorisable = json.loads(measured.read_text()) if measured.is_file() else None
    m = cfg.measurement
    with progress_bar("{task.fields[info]}", enabled=progress, console=err) as bar:
        found = extract(
            model,
            dataset,
            settings,
            memorisable=memorisable,
            memorisable_source=MEASURE if memorisable is not None else "measured now",
            P_count=params["P"],
            eval_seed=m.eval_seed,
            max_people=m.max_people,
            batch_size=m.batch_size,
            device=resolve_device(device),
            bar=bar,
        )
    run_id = config_hash(cfg.model_dump())
    result = {"run_id": run_id, "name": cfg.name, **found.to_dict()}
    if db is not None:
        with ResultsStore(db) as store:
            store.record_extraction(
                run_id,
                found.settings_hash,
                settings=found.settings,
                result=result,
                run_dir=str(run_dir.resolve()),
            )
    write_text_atomic(run_dir / EXTRACT, json.dumps(result, indent=2) + "\n")
    return result


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _one_in(x: float | None) -> str:
    """A uniform chance 1/K as "1/K" (a percentage would round 1/67,200 to 0.0%)."""
    return "—" if not x else f"1/{round(1 / x):,}"


def _dataset(r: dict) -> str:
    variant = (r.get("dataset") or {}).get("variant")
    return f"{r['kind']} {variant}" if variant else r["kind"]


def print_extraction(r: dict) -> None:
    """Per attribute: memorisable, extractable and chance accuracy; then the overall row."""
    mem, ext, chance = r["memorisable"], r["extractable"], r["chance"]
    table = Table(
        title=f"knowledge extraction: {r['name']} ({_dataset(r)}, N = {r['n_people']:,}; "
        f"{ext['n_people']:,} held out)"
    )
    for col in ("attribute", "memorisable", "extractable", "chance", "uniform"):
        table.add_column(col, justify="left" if col == "attribute" else "right")
    for a in r["attributes"]:
        label = a if a in r["overall_attributes"] else f"{a} (not in overall)"
        table.add_row(
            label,
            _pct(mem["per_attribute"].get(a)),
            _pct(ext["per_attribute"].get(a)),
            _pct(chance["per_attribute"].get(a)),
            _one_in(chance["uniform"].get(a)),
        )
    table.add_row(
        "[bold]overall", _pct(mem["overall"]), _pct(ext["overall"]), _pct(chance["overall"]), ""
    )
    console = Console()
    console.print(table)
    f = r["finetune"]
    how = (
        f"LoRA r = {f['qv_rank']} on q/v, r' = {f['embedding_rank']} on the embedding"
        if f["method"] == "lora"
        else "full fine-tuning"
    )
    s = r["settings"]
    console.print(
        f"fine-tuned: {how}, {f['trainable_params']:,} trainable params, {f['steps']:,} steps "
        f"of {s['batch_size']} over {f['qa_pairs']:,} QA pairs, lr {s['lr']:g}, "
        f"final loss {f['final_loss']:.3f}, {f['seconds']:.0f} s; "
        f"fine-tuning half answered {_pct(r['finetune_accuracy']['overall'])}"
    )
    console.print(f"memorisable: {mem['source']}; {chance['rule']}")
    for note in r.get("notes") or []:
        console.print(f"note: {note}")
