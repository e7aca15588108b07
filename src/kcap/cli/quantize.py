"""`kcap quantize`: quantize a trained run's weights (int8 ... int2), measure it again with the
same P, and record the result in the results store as a finished run of its own.

The defaults are the paper's (auto_gptq's): GPTQ, per channel, a symmetric grid (``--sym``),
act-order (``--act-order``), calibrated on 1000 people's biographies (``--calib-people``; all
people when the dataset has fewer).

The quantized run's config is the run's config plus ``quantize: {bits, method, group_size, sym,
act_order, calib_people}`` (and ``experts: rtn`` for a MoE model under GPTQ, whose experts are
rounded to nearest); its id is the hash of that config (so a second identical call finds it
finished and skips it); its name is the run's name + the quantization's label
(`kcap.models.quantize.quant_label`: ``-int4-gptq`` for the paper's settings, ``-asym``,
``-noact``, ``-g128``, ``-rtn-experts`` where they differ). Its measurement and per-layer
quantization errors go to ``RUN_DIR/quantized/<label>-<id>/``. What is quantized is described in
`kcap.models.quantize`. GPTQ calibrates on one training-style biography of each of the first
``--calib-people`` people that the run's training stream visits (deterministic: the run's seed),
joined by ``<|eos|>`` and cut into inputs of the run's window length (the last one shorter, never
padded); random strings: the first sequences of the stream, one per row.
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

from kcap.atomic import require_writable, staged_dir
from kcap.cli.train import DB
from kcap.errors import KcapError, require
from kcap.experiments.store import ResultsStore
from kcap.measure.measurement import Measurement
from kcap.models.quantize import (
    FULL_PRECISION,
    METHODS,
    LayerQuant,
    Method,
    has_experts,
    quant_label_of,
    quantize_model,
)
from kcap.training.config import config_hash

err = Console(stderr=True)
BITS = (8, 4, 3, 2)
QUANTIZED_DIR = "quantized"
_CALIB_BATCH = 8
#: The paper's calibration set: "a small set of 1000 people's biographies" (§8).
CALIB_PEOPLE = 1000


@dataclass(frozen=True)
class QuantSettings:
    """One quantization recipe, as given on the command line (validated)."""

    bits: int
    method: Method
    group_size: int | None
    calib_people: int = CALIB_PEOPLE
    act_order: bool = True
    sym: bool = True

    def config(self, *, moe: bool = False) -> dict:
        """The ``quantize`` entry of the quantized run's config, for a model with (``moe``) or
        without experts. RTN uses no calibration and no column order."""
        gptq = self.method == "gptq"
        entry = {
            "bits": self.bits,
            "method": self.method,
            "group_size": self.group_size,
            "sym": self.sym,
            "act_order": self.act_order and gptq,
            "calib_people": self.calib_people if gptq else 0,
        }
        if moe and gptq:
            entry["experts"] = "rtn"  # GPTQ leaves the experts to RTN (kcap.models.quantize)
        return entry

    def suffix(self, *, moe: bool = False) -> str:
        """The label appended to the run's name: ``int4-gptq``, ``int8-rtn-asym``, ..."""
        return quant_label_of(self.config(moe=moe))


def check_settings(
    bits: int,
    method: str,
    group_size: int | None,
    calib_people: int,
    act_order: bool,
    sym: bool = True,
) -> QuantSettings:
    """Validate the options; each error is one `KcapError` naming its option."""
    require(bits in BITS, "--bits", f"must be one of {', '.join(map(str, BITS))}; got {bits}")
    require(method in METHODS, "--method", f"must be one of {', '.join(METHODS)}; got {method!r}")
    require(group_size is None or group_size >= 2, "--group-size", "must be at least 2")
    require(calib_people >= 1, "--calib-people", "must be at least 1")
    return QuantSettings(bits, method, group_size, calib_people, act_order, sym)  # type: ignore[arg-type]


def calibration_batches(
    cfg, dataset, people: int, *, seed: int | None = None, batch_size: int = _CALIB_BATCH
) -> tuple[list[torch.Tensor], int]:
    """GPTQ's calibration inputs (module docstring) for the first ``people`` people of the
    run's training stream (its seed unless ``seed``), in batches; and how many people that is."""
    from kcap.training.trainer import window_batch

    t = cfg.training
    seed = t.seed if seed is None else seed
    if dataset.kind == "random":  # one sequence per row, as the training stream has them
        from kcap.tokenization.factory import make_stream

        stream = make_stream(dataset, exposures=1, seed=seed, window=t.window)
        rows = [w.ids for w in itertools.islice(stream, people)]
        x, _ = window_batch(rows)
        return list(x.split(batch_size)), len(rows)
    ids, covered = _biography_tokens(dataset, people, seed)
    inputs = torch.tensor(ids[:-1])  # the last token is only ever a target
    full = len(inputs) // t.window
    batches = list(inputs[: full * t.window].view(full, t.window).split(batch_size))
    if len(inputs) > full * t.window:
        batches.append(inputs[full * t.window :].unsqueeze(0))
    return batches, covered


def _biography_tokens(dataset, people: int, seed: int) -> tuple[list[int], int]:
    """``<|eos|>``, then one biography (as exposure 0 renders it) of each of the first
    ``people`` people in the training stream's order, each followed by ``<|eos|>``."""
    from kcap.tokenization.stream import ExposureStream

    source, tok = dataset.source(), dataset.tokenizer
    order = ExposureStream(source, tok, exposures=1, seed=seed).permutation(0)[:people]
    ids = [tok.eos_id]
    for doc in source.documents(0, order):
        ids += tok.encode_pieces(doc.pieces)[0] + [tok.eos_id]
    return ids, len(order)


@dataclass
class Outcome:
    """What one `quantize_run` did: the recorded metrics, and the unquantized reference (`_brief`:
    a missing figure is None)."""

    name: str
    run_id: str
    label: str  # the quantization's label: int4-gptq, ...
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
    moe = has_experts(model)
    qconfig = {**cfg.model_dump(), "quantize": settings.config(moe=moe)}
    label = settings.suffix(moe=moe)
    run_id, name = config_hash(qconfig), f"{cfg.name}-{label}"
    out = Path(run_dir) / QUANTIZED_DIR / f"{label}-{run_id}"
    require_writable(out, "RUN_DIR")
    if not Path(db).is_file():  # created only at the end
        require_writable(Path(db).parent, "--db")
    elif not force and (done := _recorded(db, [run_id], config_hash(cfg.model_dump()))):
        return done
    metrics, timings, errors = _quantize_and_measure(
        Path(run_dir), settings, cfg, dataset, model, params
    )
    measurement = {k: v for k, v in metrics.items() if k != "quantize"}
    with staged_dir(out) as tmp:  # the files land, whole, only once the store has the row
        (tmp / "measure.json").write_text(json.dumps(measurement, indent=2) + "\n")
        (tmp / "quantize.json").write_text(
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
            store.finish_run(
                run_id, metrics=metrics, timings={**timings, "wall_s": time.time() - t0}
            )
    return Outcome(name, run_id, label, metrics["quantize"]["reference"], metrics, False)


def _recorded(db: Path, run_ids: list[str], source_id: str) -> Outcome | None:
    """The store's finished quantized run among ``run_ids`` (of the run ``source_id``), as a
    skipped `Outcome`; None when there is none (or no store). A record rebuilt from a CSV row
    (benchmarks/rebuild_store.py) kept only the headline figures: its reference is then the
    source run's record. Reading a store kcap cannot use fails here."""
    if not Path(db).is_file():
        return None
    with ResultsStore(db) as store:
        for run_id in run_ids:
            rec = store.get(run_id)
            if rec is None or rec.status != "finished":
                continue
            ref = rec.metrics.get("quantize", {}).get("reference")
            if ref is None:
                source = store.get(source_id)
                ref = _brief(source.metrics if source is not None else {})
            label = quant_label_of(rec.config["quantize"])
            return Outcome(rec.name, run_id, label, ref, rec.metrics, True)
    return None


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
    calib, people = calibration_batches(cfg, dataset, settings.calib_people) if gptq else (None, 0)
    layers: dict[str, LayerQuant] = {}
    quantize_model(
        model,
        settings.bits,
        method=settings.method,
        group_size=settings.group_size,
        calib=calib,
        act_order=settings.act_order,
        sym=settings.sym,
        record=layers,
    )
    t2 = time.time()
    metrics = _measure(cfg, dataset, model, params, device).to_dict()
    errors = {k: v.rel_error for k, v in layers.items() if v.rel_error is not None}
    moe = has_experts(model)
    metrics["quantize"] = {
        **settings.config(moe=moe),
        "label": settings.suffix(moe=moe),
        "quantized": "weights of the transformer-block linears"
        + (" (GPTQ) and MoE experts (RTN)" if moe and gptq else " and MoE experts")
        + " (fake-quant)",
        "quantized_layers": len(layers),
        "full_precision": list(FULL_PRECISION),
        "calib_people_used": people,
        "calib_tokens": 0 if calib is None else sum(x.numel() for x in calib),
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


_BRIEF = ("bits", "data_bits", "P", "R", "recall_accuracy", "p1", "p2")


def _brief(m: dict) -> dict:
    """The headline figures of a measurement (or a store record's metrics); None where absent."""
    brief = {k: m.get(k) for k in _BRIEF}
    if isinstance(brief["bits"], dict):
        brief["bits"] = brief["bits"]["total"]
    return brief


def _fmt(spec: str, value) -> str:
    return "-" if value is None else format(value, spec)


def _fraction(m: dict) -> str:
    return "-" if None in (m["bits"], m["data_bits"]) else f"{m['bits'] / m['data_bits']:.1%}"


# ------------------------------------------------------------------------------ printing


def print_comparison(o: Outcome) -> None:
    """Unquantized vs quantized: bits, fraction of the data's bits, R, recall, losses."""
    q, ref = _brief(o.metrics), o.reference
    table = Table(title=f"{o.name}{' (already recorded)' if o.skipped else ''}")
    table.add_column("")
    table.add_column("unquantized", justify="right")
    table.add_column(o.label, justify="right")
    rows = [
        ("P (same for both)", ",", "P"),
        ("bits stored", ",.0f", "bits"),
        ("capacity ratio R (bits/param)", ".3f", "R"),
        ("recall accuracy", ".1%", "recall_accuracy"),
        ("p1 (nats)", ".3f", "p1"),
        ("p2 (nats)", ".3f", "p2"),
    ]
    for title, spec, key in rows:
        table.add_row(title, _fmt(spec, ref[key]), _fmt(spec, q[key]))
    table.add_row("fraction of data bits", _fraction(ref), _fraction(q))
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
        q, ref = _brief(o.metrics), o.reference
        table.add_row(
            o.name,
            r["state"],
            _fmt(",.0f", ref["bits"]),
            _fmt(",.0f", q["bits"]),
            _fmt(".3f", ref["R"]),
            _fmt(".3f", q["R"]),
            _fmt(".1%", q["recall_accuracy"]),
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
    calib_people: int = typer.Option(
        CALIB_PEOPLE,
        "--calib-people",
        help="GPTQ calibration: one biography of each of this many people (all when fewer).",
    ),
    act_order: bool = typer.Option(
        True,
        "--act-order/--no-act-order",
        help="GPTQ: quantize columns by decreasing Hessian diagonal (auto_gptq's desc_act).",
    ),
    sym: bool = typer.Option(
        True, "--sym/--asym", help="Symmetric grid (auto_gptq's default) or asymmetric."
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
    settings = check_settings(bits, method, group_size, calib_people, act_order, sym)
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
    """Every point of the grid whose run finished (RUN_DIR/measure.json), with a progress bar.
    A point whose quantized run the store already holds is skipped (unless ``force``) even when
    its run folder is gone, e.g. a store rebuilt from `kcap runs --import` on a new machine."""
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
            done = None if force else _recorded(db, _quantized_ids(point, settings), point.run_id)
            if done is not None:
                rows.append({"name": done.name, "state": "skipped", "outcome": done})
            elif not (run_dir / MEASURE).is_file():
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


def _quantized_ids(point, settings: QuantSettings) -> list[str]:
    """The ids the quantized run of a grid point can have (`quantize_run`): whether the model has
    experts is known once it is built, so both are tried; only one can be in the store."""
    config = point.config.model_dump()
    return [config_hash({**config, "quantize": settings.config(moe=m)}) for m in (False, True)]


def _json_row(r: dict) -> dict:
    o: Outcome | None = r.get("outcome")
    row = {"name": r["name"], "state": r["state"], "error": r.get("error")}
    if o is not None:
        row.update(run_id=o.run_id, reference=o.reference, metrics=o.metrics)
    return row
