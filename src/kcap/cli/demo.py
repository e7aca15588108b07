"""`kcap demo`: generate, train, measure and report, end to end, on the embedded default."""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

import typer
from rich.console import Console

from kcap.cli.train import print_measurement, run_training
from kcap.errors import KcapError
from kcap.experiments.demo import DEMO_CONFIG
from kcap.experiments.run_report import write_run_report
from kcap.experiments.store import DEFAULT_DB
from kcap.training.config import apply_overrides, parse_config


def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Output folder (run/ and report/)."),
    db: Path = typer.Option(Path(DEFAULT_DB), "--db", help="SQLite results store."),
    set_: list[str] = typer.Option([], "--set", help="Override a demo config value."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out."),
) -> None:
    """Generate bioS, train a small GPT2, measure the bits it stores, write a report."""
    if out.exists() and any(out.iterdir()) and not force:
        raise KcapError("--out", f"{out} is not empty (use --force to replace it)")
    cfg = parse_config(apply_overrides(copy.deepcopy(DEMO_CONFIG), set_))
    if out.exists():
        shutil.rmtree(out)
    console = Console()
    t0 = time.time()
    result, summary = run_training(cfg, out / "run", db=db)
    report = write_run_report(out / "run", out / "report", title="kcap demo")
    print_measurement(result.to_dict(), summary)
    console.print(f"total time {time.time() - t0:.0f} s; report: {report}")
