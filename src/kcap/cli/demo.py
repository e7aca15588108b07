"""`kcap demo`: the embedded default study: three tiny models over-filled, bits against P, the
fitted bits per parameter (`kcap.experiments.demo`), with the store, run folders and report."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kcap.atomic import require_writable, require_writable_file
from kcap.errors import KcapError


def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Output folder (store, runs, report)."),
    db: Path = typer.Option(
        None, "--db", help="SQLite results store (default: OUT/kcap.db, the demo's own)."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a demo base config value."),
    workers: int = typer.Option(2, "--workers", "-j", help="Runs in parallel on this machine."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
) -> None:
    """Train three tiny GPT2s, each over-filled with random strings; fit bits per parameter."""
    from kcap.experiments.demo import demo_law, demo_points
    from kcap.experiments.report import write_report
    from kcap.experiments.sweep import SweepOptions, run_sweep

    require_writable(out, "--out")
    if db is not None:
        require_writable_file(db, "--db")
    if out.exists() and any(out.iterdir()) and not force:
        raise KcapError("--out", f"{out} is not empty (use --force to replace it)")
    points = demo_points(set_)  # bad overrides fail here, before anything is written
    if workers < 1:
        raise KcapError("--workers", f"must be at least 1; got {workers}")
    if out.exists():
        shutil.rmtree(out)
    db = db or out / "kcap.db"
    console = Console()
    first = points[0].config
    widths = {p.config.model.overrides.get("d_model") for p in points}
    console.print(
        f"kcap demo: {len(points)} runs, {len(widths)} {first.model.preset.upper()} widths x "
        f"{len(points) // len(widths)} sets of random strings, {first.training.exposures} "
        f"exposures; {workers} worker(s)"
    )
    t0 = time.time()
    opts = SweepOptions(db=db, out=out / "sweep", workers=workers, threads=1)
    summary = run_sweep(points, opts, name="demo")
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)
    if summary.failed:
        raise KcapError("demo", f"{summary.failed} run(s) failed: {summary.failures[0][1]}")
    report = write_report(db, out / "report", title="kcap demo: a capacity law on random strings")
    law = demo_law(db)
    if law is None:  # cannot happen after a clean sweep; say so rather than print nothing
        raise KcapError("demo", f"no finished random-strings runs in {db}")
    print_law(console, law)
    console.print(f"total time {time.time() - t0:.0f} s; report: {report.parent / 'report.md'}")


def _short(model: str) -> str:
    """``gpt2-2-2,d_model=8,n_head=2`` -> ``gpt2-2-2 d 8``: the demo's models differ in width."""
    preset, *keys = model.split(",")
    width = dict(k.split("=", 1) for k in keys if "=" in k).get("d_model")
    return f"{preset} d {width}" if width else model


def print_law(console: Console, law) -> None:
    """Each model's bits on each set of strings, whether they stopped rising, and the law."""
    data_bits = {p.n: p.data_bits for p in law.points}
    table = Table(title=f"bits stored against parameters ({law.label})")
    heads = (
        "model",
        "P",
        "strings M: bits stored / data bits",
        "last doubling",
        "C / P",
        "capacity",
    )
    for col in heads:
        table.add_column(col, justify="right" if col in ("P", "C / P", "last doubling") else "left")
    for m in sorted(law.models, key=lambda m: m.P):
        by_n = sorted(m.bits_by_n.items())
        cells = [f"M {n:,}: {b / 1e3:,.1f}k / {data_bits[n] / 1e3:,.1f}k" for n, b in by_n]
        before = max((b for _, b in by_n[:-1]), default=0.0)
        change = f"{by_n[-1][1] / before - 1:+.0%}" if before else "-"
        verdict = "yes" if m.at_capacity else f"no: {m.why.split(':')[0]}"
        table.add_row(_short(m.model), f"{m.P:,}", "\n".join(cells), change, f"{m.R:.2f}", verdict)
    console.print(table)
    console.print(
        "C is the most a model stored; it is a capacity when the model stored under 90% of "
        "each set and the largest set held within 10% of the most on a smaller one"
    )
    est = law.estimate
    if est is None:
        console.print(
            f"no model reached its capacity, so there is no law; peak R {law.peak_R:.2f} "
            "bits/param (a lower bound on the capacity)"
        )
        return
    slope = f"; bits grow as P^{law.slope:.2f} (a constant ratio is P^1)" if law.slope else ""
    console.print(
        f"capacity ratio R = {est.text()} bits/param over {law.n_at_capacity} of "
        f"{len(law.models)} models at capacity{slope}"
    )
    console.print(
        "for scale: Morris et al. (2025) measured about 3.6 bits/param on random strings with "
        "larger GPTs trained to convergence; the paper's law on bioS is 2 at 1000 exposures"
    )
