"""`kcap report`: the static HTML page (and markdown twin) of every result in the store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from kcap.atomic import require_writable
from kcap.errors import KcapError
from kcap.experiments.store import DEFAULT_DB


def report(
    db_arg: Path = typer.Argument(None, metavar="[DB]", help="Results store (default: --db)."),
    db: Path = typer.Option(Path(DEFAULT_DB), "--db", help="SQLite results store."),
    out: Path = typer.Option(Path("report"), "--out", help="Output folder (index.html, ...)."),
    title: str = typer.Option("kcap report", "--title", help="Page title."),
) -> None:
    """Plots and tables: the scaling laws, and each of the paper's twelve results vs ours."""
    from kcap.experiments.report import write_report

    store = db_arg or db
    if not store.is_file():
        raise KcapError("DB", f"no results store at {store}")
    require_writable(out, "--out")
    err = Console(stderr=True)
    page = write_report(
        store, out, title=title, warn=lambda note: err.print(f"[yellow]warning:[/] {note}")
    )
    Console().print(f"report: {page} (and {out / 'report.md'}); open it from disk")
