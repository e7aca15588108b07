"""`kcap sweep GRID.yaml`: expand a grid into runs and run those not yet finished.

SIGTERM or SIGINT stops a sweep cleanly (every worker checkpoints, its run is recorded as
interrupted) and exits with 128 + the signal number and the command that resumes it; a second
signal stops it at once.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kcap.atomic import require_writable_file
from kcap.experiments.store import DEFAULT_DB, ResultsStore

err = Console(stderr=True)


def sweep(
    grid_file: Path = typer.Argument(..., metavar="GRID", help="Grid YAML (base + product/zip)."),
    db: Path = typer.Option(Path(DEFAULT_DB), "--db", help="SQLite results store."),
    out: Path = typer.Option(
        Path("kcap-sweep"), "--out", help="Sweep folder: runs/<run id>/ and shared datasets/."
    ),
    workers: int = typer.Option(1, "--workers", "-j", help="Runs in parallel on this machine."),
    pack: int = typer.Option(
        1,
        "--pack",
        help="Train up to K runs of one model shape as one packed model per worker "
        "(each keeps its own run directory, checkpoints and row).",
    ),
    threads: int = typer.Option(
        None, "--threads", help="Torch threads per worker (default: cores // workers)."
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Re-run (from scratch) runs that failed with an error."
    ),
    ray: str = typer.Option(
        None, "--ray", metavar="ADDRESS", help="Submit runs to a Ray cluster ('local': start one)."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a base config value: key.sub=v."),
    only: list[str] = typer.Option(
        [],
        "--only",
        help="Run only the points matching KEY=V1,V2 (a config key, e.g. dataset.n=1600,3200) "
        "or a glob over run names and ids; repeat to narrow further.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List the runs and their state in the store; run nothing."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the summary (or list) as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    export: Path | None = typer.Option(
        None,
        "--export",
        help="Keep this file (kcap runs --export JSON lines) in step with the store: rewritten, "
        "whole, each time a run finishes.",
    ),
) -> None:
    """Run a grid of configs, skipping those already finished in the results store.

    Every point is identified by the hash of its full config, so a sweep can be stopped and
    started again at will: finished runs are skipped, interrupted ones resume from their last
    checkpoint, failed ones are retried with --retry-failed.
    """
    from kcap.experiments.grid import expand, load_grid, select
    from kcap.experiments.sweep import (
        SweepOptions,
        default_threads,
        describe_points,
        point_states,
        run_sweep,
    )

    if export is not None:
        require_writable_file(export, "--export")
    grid = load_grid(grid_file, set_)
    points = select(expand(grid), only)
    for skipped in grid.skipped:
        err.print(f"[yellow]skipping block {skipped}[/]")
    if dry_run:
        if db.is_file():
            with ResultsStore(db) as store:
                states = point_states(points, store)
        else:
            states = {p.run_id: "new" for p in points}
        rows = describe_points(points, states, out / "datasets")
        if json_out:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title=f"sweep {grid.name}: {len(points)} runs")
        for col in ("run_id", "name", "state", "N", "exposures", "person-exposures", "tokens"):
            table.add_column(col, justify="right" if col[0] in "Nept" else "left")
        for r in rows:
            table.add_row(
                r["run_id"],
                r["name"],
                r["state"],
                str(r["n"]),
                str(r["exposures"]),
                f"{r['person_exposures']:,}",
                "?" if r["tokens"] is None else f"{r['tokens']:,}",
            )
        console = Console()
        Console(width=max(console.width, 160) if not console.is_terminal else None).print(table)
        return
    opts = SweepOptions(
        db=db,
        out=out,
        workers=workers,
        threads=threads,
        retry_failed=retry_failed,
        ray=ray,
        progress=progress and not json_out,
        pack=pack,
        export=export,
    )
    if not json_out:
        err.print(
            f"sweep {grid.name}: {len(points)} runs, {workers} worker(s) x "
            f"{threads or default_threads(workers)} thread(s){f', Ray {ray}' if ray else ''}"
            f"{f', packs of up to {pack}' if pack > 1 else ''}; "
            f"store {db}, runs in {out / 'runs'}"
        )
    from kcap.training.interrupt import Aborted

    resume = " ".join(
        ["kcap sweep", shlex.quote(str(grid_file)), "--db", shlex.quote(str(db))]
        + ["--out", shlex.quote(str(out)), "--workers", str(workers)]
        + (["--pack", str(pack)] if pack > 1 else [])
        + [f"--set {shlex.quote(s)}" for s in set_]
        + [f"--only {shlex.quote(s)}" for s in only]
        + ([f"--export {shlex.quote(str(export))}"] if export is not None else [])
    )
    try:
        summary = run_sweep(points, opts, name=grid.name)
    except Aborted as e:
        typer.echo(
            f"Stopped at once by a second {e.reason}: running points are marked interrupted "
            f"and resume from their last checkpoint: {resume}",
            err=True,
        )
        raise typer.Exit(e.exit_code) from None
    if json_out:
        typer.echo(json.dumps(summary.__dict__, indent=2))
    else:
        Console().print(summary.line(grid.name))
        for name, error in summary.failures:
            err.print(f"[red]failed[/] {name}: {error}")
    if summary.stopped_by:
        typer.echo(
            f"Interrupted by {summary.stopped_by}: {summary.interrupted} run(s) checkpointed and "
            f"marked interrupted; resume: {resume}",
            err=True,
        )
        raise typer.Exit(summary.exit_code)
    if summary.failed:
        raise typer.Exit(1)
