"""`kcap quantize`: quantize a trained run's weights (int8 ... int2), measure it again with the
same P, and record the result in the results store as a finished run of its own.

The quantized run's config is the run's config plus ``quantize: {bits, method, group_size,
calib_windows, act_order}``; its id is the hash of that config (so a second identical call finds
it finished and skips it); its name is the run's name + ``-int{B}-{method}`` (+ ``-g{G}`` with
groups). Its measurement and per-layer quantization errors go to
``RUN_DIR/quantized/<suffix>-<id>/``. What is quantized is described in `kcap.models.quantize`;
GPTQ calibrates on the first ``--calib-windows`` windows of the run's own training stream
(deterministic: the run's seed).
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from kcap.cli.train import DB
from kcap.errors import KcapError, require
from kcap.experiments.store import ResultsStore, config_hash
from kcap.measure.knowledge import Measurement
from kcap.models.quantize import (
    FULL_PRECISION,
    METHODS,
    LayerQuant,
    Method,
    quant_label,
    quantize_model,
)

err = Console(stderr=True)
BITS = (8, 4, 3, 2)
QUANTIZED_DIR = "quantized"
_CALIB_BATCH = 8


@dataclass(frozen=True)
class QuantSettings:
    """One quantization recipe, as given on the command line (validated)."""

    bits: int
    method: Method
    group_size: int | None
    calib_windows: int
    act_order: bool = False

    @property
    def suffix(self) -> str:
        """``int4-gptq`` (``-g128`` with groups): appended to the run's name."""
        return quant_label(self.bits, self.method, self.group_size)

    def config(self) -> dict:
        """The ``quantize`` entry of the quantized run's config (RTN uses no calibration)."""
        gptq = self.method == "gptq"
        return {
            "bits": self.bits,
            "method": self.method,
            "group_size": self.group_size,
            "calib_windows": self.calib_windows if gptq else 0,
            "act_order": self.act_order and gptq,
        }


def check_settings(
    bits: int, method: str, group_size: int | None, calib_windows: int, act_order: bool
) -> QuantSettings:
    """Validate the options; each error is one `KcapError` naming its option."""
    require(bits in BITS, "--bits", f"must be one of {', '.join(map(str, BITS))}; got {bits}")
    require(method in METHODS, "--method", f"must be one of {', '.join(METHODS)}; got {method!r}")
    require(group_size is None or group_size >= 2, "--group-size", "must be at least 2")
    require(calib_windows >= 1, "--calib-windows", "must be at least 1")
    return QuantSettings(bits, method, group_size, calib_windows, act_order)  # type: ignore[arg-type]


def calibration_batches(
    cfg, dataset, n_windows: int, *, seed: int | None = None, batch_size: int = _CALIB_BATCH
) -> list[torch.Tensor]:
    """The first ``n_windows`` windows of the run's training stream (its seed unless ``seed``),
    as model inputs in batches, the way the trainer builds them."""
    from kcap.tokenization.factory import make_stream
    from kcap.training.trainer import window_batch

    t = cfg.training
    stream = make_stream(
        dataset, exposures=t.exposures, seed=t.seed if seed is None else seed, window=t.window
    )
    windows = [w.ids for w in itertools.islice(stream, n_windows)]
    if not windows:
        raise KcapError("--calib-windows", "the run's training stream has no windows")
    x, _ = window_batch(windows)
    return list(x.split(batch_size))


@dataclass
class Outcome:
    """What one `quantize_run` did: the recorded metrics, and the unquantized reference."""

    name: str
    run_id: str
    reference: dict
    metrics: dict
    skipped: bool


def _measure(cfg, dataset, model, params: dict, device: torch.device) -> Measurement:
    """The run's final measurement (as the trainer's), with the run's P."""
    from kcap.training.trainer import measure_run

    return measure_run(
        cfg, model, dataset, params, max_people=cfg.measurement.max_people, device=device
    )


def _reference(run_dir: Path, cfg, dataset, model, params: dict, device) -> dict:
    """The unquantized measurement: RUN_DIR/measure.json, or measured now."""
    from kcap.training.trainer import MEASURE

    path = run_dir / MEASURE
    if path.is_file():
        return json.loads(path.read_text())
    return _measure(cfg, dataset, model, params, device).to_dict()


def quantize_run(
    run_dir: Path, settings: QuantSettings, *, db: Path, force: bool = False
) -> Outcome:
    """Quantize, measure and record one run (skipped when already finished, unless ``force``)."""
    from kcap.training.trainer import load_run

    t0 = time.time()
    cfg, dataset, model, params = load_run(run_dir)
    qconfig = {**cfg.model_dump(), "quantize": settings.config()}
    run_id, name = config_hash(qconfig), f"{cfg.name}-{settings.suffix}"
    with ResultsStore(db) as store:
        rec = store.get(run_id)
    if rec is not None and rec.status == "finished" and not force:
        return Outcome(name, run_id, rec.metrics["quantize"]["reference"], rec.metrics, True)
    metrics, timings, errors = _quantize_and_measure(
        Path(run_dir), settings, cfg, dataset, model, params
    )
    out = Path(run_dir) / QUANTIZED_DIR / f"{settings.suffix}-{run_id}"
    out.mkdir(parents=True, exist_ok=True)
    measurement = {k: v for k, v in metrics.items() if k != "quantize"}
    (out / "measure.json").write_text(json.dumps(measurement, indent=2) + "\n")
    (out / "quantize.json").write_text(
        json.dumps({**metrics["quantize"], "rel_error": errors}, indent=2) + "\n"
    )
    with ResultsStore(db) as store:
        store.start_run(
            run_id,
            name=name,
            config=qconfig,
            manifest=dataset.manifest,
            run_dir=str(out.resolve()),
            params=params,
        )
        store.finish_run(run_id, metrics=metrics, timings={**timings, "wall_s": time.time() - t0})
    return Outcome(name, run_id, metrics["quantize"]["reference"], metrics, False)


def _quantize_and_measure(
    run_dir: Path, settings: QuantSettings, cfg, dataset, model, params: dict
) -> tuple[dict, dict, dict[str, float]]:
    """(metrics: the measurement plus its ``quantize`` metadata, timings, per-layer errors)."""
    from kcap.training.trainer import resolve_device

    device = resolve_device("auto")
    model.to(device)
    reference = _reference(run_dir, cfg, dataset, model, params, device)
    t1 = time.time()
    gptq = settings.method == "gptq"
    calib = calibration_batches(cfg, dataset, settings.calib_windows) if gptq else None
    layers: dict[str, LayerQuant] = {}
    quantize_model(
        model,
        settings.bits,
        method=settings.method,
        group_size=settings.group_size,
        calib=calib,
        act_order=settings.act_order,
        record=layers,
    )
    t2 = time.time()
    metrics = _measure(cfg, dataset, model, params, device).to_dict()
    errors = {k: v.rel_error for k, v in layers.items() if v.rel_error is not None}
    metrics["quantize"] = {
        **settings.config(),
        "quantized": "weights of the transformer-block linears and MoE experts (fake-quant)",
        "quantized_layers": len(layers),
        "full_precision": list(FULL_PRECISION),
        "calib_windows_used": 0 if calib is None else sum(len(x) for x in calib),
        "mean_rel_error": float(np.mean(list(errors.values()))) if errors else None,
        "source_run_id": config_hash(cfg.model_dump()),
        "source_run_dir": str(run_dir.resolve()),
        "reference": _brief(reference),
    }
    timings = {
        "quantize_s": t2 - t1,
        "measure_s": time.time() - t2,
        "device": str(device),
        "host": socket.gethostname(),
    }
    return metrics, timings, errors


def _brief(m: dict) -> dict:
    return {
        "bits": m["bits"]["total"],
        "data_bits": m["data_bits"],
        "P": m["P"],
        "R": m["R"],
        "recall_accuracy": m["recall_accuracy"],
        "p1": m["p1"],
        "p2": m["p2"],
    }


# ------------------------------------------------------------------------------ printing


def print_comparison(o: Outcome) -> None:
    """Unquantized vs quantized: bits, fraction of the data's bits, R, recall, losses."""
    q, ref = _brief(o.metrics), o.reference
    label = o.metrics["quantize"]
    table = Table(title=f"{o.name}{' (already recorded)' if o.skipped else ''}")
    table.add_column("")
    table.add_column("unquantized", justify="right")
    table.add_column(f"int{label['bits']} {label['method']}", justify="right")
    rows = [
        ("bits stored", "{:,.0f}", "bits"),
        ("capacity ratio R (bits/param)", "{:.3f}", "R"),
        ("recall accuracy", "{:.1%}", "recall_accuracy"),
        ("p1 (nats)", "{:.3f}", "p1"),
        ("p2 (nats)", "{:.3f}", "p2"),
    ]
    table.add_row("P (same for both)", f"{ref['P']:,}", f"{q['P']:,}")
    for title, fmt, key in rows:
        table.add_row(title, fmt.format(ref[key]), fmt.format(q[key]))
    table.add_row(
        "fraction of data bits",
        f"{ref['bits'] / ref['data_bits']:.1%}",
        f"{q['bits'] / q['data_bits']:.1%}",
    )
    Console().print(table)


def _grid_table(rows: list[dict]) -> Table:
    table = Table(title="quantized runs")
    for col in ("name", "state", "bits fp", "bits q", "R fp", "R q", "recall q"):
        table.add_column(col, justify="left" if col in ("name", "state") else "right")
    for r in rows:
        o: Outcome | None = r.get("outcome")
        if o is None:
            table.add_row(r["name"], r["state"], *["-"] * 5)
            continue
        q = _brief(o.metrics)
        table.add_row(
            o.name,
            r["state"],
            f"{o.reference['bits']:,.0f}",
            f"{q['bits']:,.0f}",
            f"{o.reference['R']:.3f}",
            f"{q['R']:.3f}",
            f"{q['recall_accuracy']:.1%}",
        )
    return table


# ------------------------------------------------------------------------------ the command


def quantize_cmd(
    run_dir: Path = typer.Argument(None, help="A trained kcap run directory (or use --grid)."),
    bits: int = typer.Option(..., "--bits", help="Weight bits: 8, 4, 3 or 2."),
    method: str = typer.Option("gptq", "--method", help="gptq, or rtn (round to nearest)."),
    group_size: int = typer.Option(
        None, "--group-size", help="Columns per quantization group (default: per channel)."
    ),
    calib_windows: int = typer.Option(
        256, "--calib-windows", help="GPTQ calibration windows from the run's training stream."
    ),
    act_order: bool = typer.Option(
        False, "--act-order", help="GPTQ: quantize columns by decreasing Hessian diagonal."
    ),
    grid: Path = typer.Option(
        None, "--grid", help="Quantize every finished run of this sweep grid (with --out)."
    ),
    out: Path = typer.Option(None, "--out", help="The sweep folder of --grid."),
    set_: list[str] = typer.Option([], "--set", help="With --grid: the sweep's --set overrides."),
    db: Path = DB,
    force: bool = typer.Option(False, "--force", help="Quantize again even if recorded."),
    json_out: bool = typer.Option(False, "--json", help="Print the measurement(s) as JSON."),
) -> None:
    """Quantize a run's weights (GPTQ or RTN), measure again with the same P, record it."""
    settings = check_settings(bits, method, group_size, calib_windows, act_order)
    if (run_dir is None) == (grid is None):
        raise KcapError("RUN_DIR", "give a run directory, or --grid GRID.yaml with --out DIR")
    if grid is not None:
        _quantize_grid(grid, out, set_, settings, db=db, force=force, json_out=json_out)
        return
    outcome = quantize_run(run_dir, settings, db=db, force=force)
    if outcome.skipped:
        err.print(f"{outcome.name} ({outcome.run_id}) is already recorded; --force redoes it")
    if json_out:
        typer.echo(json.dumps(outcome.metrics, indent=2))
    else:
        print_comparison(outcome)


def _quantize_grid(
    grid_file: Path,
    out: Path | None,
    set_: list[str],
    settings: QuantSettings,
    *,
    db: Path,
    force: bool,
    json_out: bool,
) -> None:
    """Every point of the grid whose run finished (RUN_DIR/measure.json), with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from kcap.experiments.grid import expand, load_grid
    from kcap.experiments.sweep import SweepOptions, run_dir_of
    from kcap.training.trainer import MEASURE

    if out is None:
        raise KcapError("--out", "--grid needs the sweep folder (--out DIR)")
    if not out.is_dir():
        raise KcapError("--out", f"no such sweep folder: {out}")
    points = expand(load_grid(grid_file, set_))
    opts = SweepOptions(db=db, out=out)
    rows: list[dict] = []
    bar = Progress(
        TextColumn("[bold]quantize"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=err,
        disable=json_out,
    )
    with bar:
        task = bar.add_task("", total=len(points))
        for point in points:
            bar.update(task, description=point.name)
            run_dir = run_dir_of(opts, point)
            if not (run_dir / MEASURE).is_file():
                rows.append({"name": point.name, "state": "not finished"})
            else:
                try:
                    o = quantize_run(run_dir, settings, db=db, force=force)
                    rows.append(
                        {
                            "name": o.name,
                            "state": "skipped" if o.skipped else "quantized",
                            "outcome": o,
                        }
                    )
                except Exception as e:  # one broken run must not stop the others
                    text = f"{type(e).__name__}: {e}".splitlines()[0]
                    rows.append({"name": point.name, "state": "failed", "error": text})
            bar.advance(task)
    failed = [r for r in rows if r["state"] == "failed"]
    if json_out:
        typer.echo(json.dumps([_json_row(r) for r in rows], indent=2))
    else:
        Console().print(_grid_table(rows))
        counts = {
            s: sum(r["state"] == s for r in rows)
            for s in ("quantized", "skipped", "not finished", "failed")
        }
        Console().print(", ".join(f"{n} {s}" for s, n in counts.items()))
        for r in failed:
            err.print(f"[red]failed[/] {r['name']}: {r['error']}")
    if failed:
        raise typer.Exit(1)


def _json_row(r: dict) -> dict:
    o: Outcome | None = r.get("outcome")
    row = {"name": r["name"], "state": r["state"], "error": r.get("error")}
    if o is not None:
        row.update(run_id=o.run_id, reference=o.reference, metrics=o.metrics)
    return row
