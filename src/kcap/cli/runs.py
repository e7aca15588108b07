"""`kcap runs`: list the runs recorded in the results store (a Rich table, JSON, or a CSV file);
export its finished runs as portable JSON lines, or import such lines into it."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from kcap.atomic import require_writable, require_writable_file, write_text_atomic
from kcap.errors import KcapError, require
from kcap.experiments.analysis import arch_label, dataset_label, family_label, setting_of
from kcap.experiments.archive import export_records, import_records, read_records
from kcap.experiments.store import STATUSES, ResultsStore, RunRecord
from kcap.models import preset
from kcap.models.quantize import quant_label_of
from kcap.training.config import TrainingSpec

__all__ = ["runs"]

_MISSING = "-"
_COLUMNS = (
    ("run_id", "left"),
    ("name", "left"),
    ("status", "left"),
    ("P", "right"),
    ("R", "right"),
    ("R_max", "right"),
    ("bits total", "right"),
    ("recall accuracy", "right"),
    ("wall time", "right"),
    ("created", "left"),
)
_STATUS_STYLE = {
    "running": "yellow",
    "finished": "green",
    "failed": "red",
    "interrupted": "magenta",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt_count(value: Any) -> str:
    """Compact count: 950, 12.3k, 1.23M, 4.56G."""
    if not _is_number(value) or not math.isfinite(value):
        return _MISSING if value is None else str(value)
    x = float(value)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.0f}" if x == round(x) or abs(x) >= 100 else f"{x:.3g}"


def _fmt_float(value: Any, digits: int = 3) -> str:
    if not _is_number(value):
        return _MISSING if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _fmt_duration(value: Any) -> str:
    if not _is_number(value) or not math.isfinite(value):
        return _MISSING if value is None else str(value)
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return _MISSING
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _bits_total(metrics: dict) -> Any:
    bits = metrics.get("bits")
    if isinstance(bits, dict):
        return bits.get("total")
    return None


def _row(rec: RunRecord) -> list[str]:
    m, p, t = rec.metrics, rec.params, rec.timings
    state = rec.state
    style = _STATUS_STYLE.get(state, "")
    return [
        escape(rec.run_id),
        escape(rec.name) if rec.name else _MISSING,
        f"[{style}]{state}[/]" if style else state,
        _fmt_count(p.get("P")),
        _fmt_count(m.get("R")),
        _fmt_count(m.get("R_max")),
        _fmt_count(_bits_total(m)),
        _fmt_float(m.get("recall_accuracy")),
        _fmt_duration(t.get("wall_s")),
        _fmt_time(rec.created_at),
    ]


#: Columns of ``--csv``: one row per finished run, what a results table or a plot needs.
CSV_COLUMNS = (
    "run_id", "name", "family", "setting", "N", "exposures", "arch", "quantize", "preset",
    "d_model", "rotary_dims", "lr", "P",
    "data_bits", "bits_stored", "name_bits", "value_bits", "diversity_bits", "fraction_stored",
    "R", "R_max", "recall_accuracy", "steps", "tokens", "train_s",
    # what an ablation varies, and capacity per non-embedding parameter (issue 11)
    "seed", "weight_decay", "batch_size", "window", "vocab", "tokenizer", "name_pool", "schedule",
    "min_lr_ratio", "decay_fraction", "warmup_steps", "init_std", "non_embedding",
    "R_non_embedding", "packed_with",
)  # fmt: skip


def _quant_label(q: dict | None) -> str:
    """The quantization label of a `kcap quantize` measurement (`quant_label_of`: ``int4-gptq``
    for the paper's settings, what differs appended); empty otherwise."""
    return quant_label_of(q) if q else ""


def _rotary_dims(model: dict) -> int | None:
    """Dims rotated per head by a preset model (None for a model measured from elsewhere)."""
    try:
        return preset(model["preset"], 2, **(model.get("overrides") or {})).rotary_dims
    except (KeyError, ValueError):
        return None


#: The training defaults a stored config leaves out (`TrainingSpec`'s dump drops some of them).
_DEFAULT = {k: f.default for k, f in TrainingSpec.model_fields.items()}


def csv_row(rec: RunRecord) -> dict[str, Any]:
    """A finished run as one flat CSV row (CSV_COLUMNS)."""
    cfg, m, t = rec.config, rec.metrics, rec.timings
    model, bits = cfg.get("model", {}), m.get("bits", {})
    overrides = model.get("overrides") or {}
    training, dataset = cfg.get("training", {}), cfg.get("dataset", {})
    non_embedding = (rec.params or {}).get("non_embedding")
    return {
        "run_id": rec.run_id,
        "name": rec.name,
        "family": family_label(cfg.get("dataset", {})),
        "setting": setting_of(dataset_label(rec)),  # the dataset without its N (analysis's)
        "N": m.get("n_people"),
        "exposures": cfg.get("training", {}).get("exposures"),
        "arch": arch_label(model.get("preset", ""), overrides),
        "quantize": _quant_label(cfg.get("quantize")),
        "preset": model.get("preset"),
        "d_model": overrides.get("d_model"),
        "rotary_dims": _rotary_dims(model),
        "lr": cfg.get("training", {}).get("lr"),
        "P": m.get("P"),
        "data_bits": round(m["data_bits"]),
        "bits_stored": round(bits["total"]),
        "name_bits": round(bits.get("name", 0)),
        "value_bits": round(bits.get("value", 0)),
        "diversity_bits": round(bits.get("diversity", 0)),
        "fraction_stored": round(bits["total"] / m["data_bits"], 4),
        "R": round(m["R"], 4),
        "R_max": round(m["R_max"], 4),
        "recall_accuracy": round(m["recall_accuracy"], 4),
        "steps": t.get("steps"),
        "tokens": t.get("tokens"),
        "train_s": round(t["train_s"]) if "train_s" in t else None,
        "seed": training.get("seed", 0),
        "weight_decay": training.get("weight_decay"),
        "batch_size": training.get("batch_size"),
        "window": training.get("window"),
        "vocab": dataset.get("vocab"),
        "tokenizer": dataset.get("tokenizer", "bpe"),
        "name_pool": dataset.get("name_pool"),
        "schedule": training.get("schedule", "cosine"),
        "min_lr_ratio": training.get("min_lr_ratio", _DEFAULT["min_lr_ratio"]),
        "decay_fraction": (  # only the warmup-stable-decay schedule has a decay phase
            training.get("decay_fraction", _DEFAULT["decay_fraction"])
            if training.get("schedule") == "wsd"
            else None
        ),
        "warmup_steps": training.get("warmup_steps"),
        "init_std": overrides.get("init_std", 0.02),
        "non_embedding": non_embedding,
        "R_non_embedding": round(bits["total"] / non_embedding, 4) if non_embedding else None,
        "packed_with": t.get("packed_with", 0),
    }


def runs(
    db: Path = typer.Option(Path("kcap.db"), "--db", help="Path of the results store (SQLite)."),
    status: str | None = typer.Option(
        None, help=f"Only runs with this status ({', '.join(STATUSES)})."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print a JSON list of run records instead of a table."
    ),
    csv_out: Path | None = typer.Option(
        None, "--csv", help="Write the finished runs as a flat CSV file (one row per run)."
    ),
    export: Path | None = typer.Option(
        None,
        "--export",
        help="Write the finished runs, loss-free and machine-free, as JSON lines (to commit a "
        "study's results, or to merge stores).",
    ),
    import_from: list[Path] | None = typer.Option(
        None,
        "--import",
        help="Add the runs of a --export file to --db (created if missing); a run the store "
        "has finished or is running is kept. Repeatable.",
    ),
) -> None:
    """List the runs recorded in the results store."""
    try:  # one line and exit code 2 also where `runs` is mounted without kcap's error handling
        if status is not None and status not in STATUSES:
            raise KcapError("--status", f"must be one of {', '.join(STATUSES)}; got {status!r}")
        for path, flag in ((csv_out, "--csv"), (export, "--export")):
            if path is not None:
                require_writable_file(path, flag)
        if import_from:
            require(not (csv_out or export), "--import", "cannot be combined with --csv/--export")
            _import(db, import_from)
            return
        require(db.is_file(), "--db", f"no results store at {db}")
    except KcapError as e:
        typer.echo(f"Error: {e}", err=True)
        raise typer.Exit(2) from None

    with ResultsStore(db) as store:
        records = store.list_runs(status=status)

    if csv_out is not None:
        rows = [csv_row(r) for r in records if r.status == "finished"]
        rows.sort(
            key=lambda r: (r["family"], r["exposures"] or 0, r["arch"], r["P"] or 0, r["N"] or 0)
        )
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(csv_out, buf.getvalue())  # never a half-written file
        typer.echo(f"{len(rows)} finished runs -> {csv_out}")
        return

    if export is not None:
        n = export_records(records, export)
        typer.echo(f"{n} finished runs -> {export}")
        return

    if json_out:
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2, default=str))
        return

    console = Console()
    if not records:
        console.print(f"no runs{f' with status {status}' if status else ''} in {db}")
        return

    rows = [_row(rec) for rec in records]
    table = Table(title=f"runs in {db}", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, (header, justify) in enumerate(_COLUMNS):
        if header in ("name", "created"):
            # The flexible columns: they give way first on a narrow terminal.
            table.add_column(header, justify=justify, overflow="ellipsis")
        else:
            # Short values (status, numbers): never truncated.
            width = max(Text.from_markup(row[i]).cell_len for row in rows)
            table.add_column(header, justify=justify, min_width=width, no_wrap=header == "run_id")
    for row in rows:
        table.add_row(*row)
    if not console.is_terminal:
        # Piped or captured output is not cut to 80 columns: print whole rows.
        wide = console.options.update_width(10_000)
        console = Console(width=max(console.width, Measurement.get(console, wide, table).maximum))
    console.print(table)
    for rec in records:  # why each run that did not finish stopped
        if rec.status == "failed":
            console.print(f"{escape(rec.run_id)} {rec.state}: {escape(rec.error or '?')}")


def _import(db: Path, paths: list[Path]) -> None:
    """Read every file first (a bad line changes nothing), then add their runs to ``db``."""
    records = []
    for path in paths:
        require(path.is_file(), "--import", f"no such file: {path}")
        records += read_records(path)
    if not db.is_file():
        require_writable(db.parent, "--db")
    with ResultsStore(db) as store:
        counts = import_records(store, records)
    typer.echo(
        f"{len(records)} runs from {', '.join(map(str, paths))} -> {db}: "
        f"{counts['added']} added, {counts['replaced']} replaced, {counts['kept']} kept"
    )
