"""`kcap plan`: the parameter count needed to store some knowledge, from a measured law."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from kcap.errors import KcapError
from kcap.experiments.store import DEFAULT_DB


def _si(x: float | None) -> str:
    if x is None:
        return "∞"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def plan_cmd(
    bits: str = typer.Option(None, "--bits", help="Bits of knowledge to store (5e6, 5M, ...)."),
    dataset: Path = typer.Option(None, "--dataset", help="A dataset directory: store its bits."),
    exposures: int = typer.Option(
        1000, "--exposures", help="Exposures of each piece of knowledge."
    ),
    arch: str = typer.Option(
        "gpt2", "--arch", help="Architecture: gpt2, llama, mistral, gpt2-no-mlp, gpt2-moe32, ..."
    ),
    db: Path = typer.Option(Path(DEFAULT_DB), "--db", help="Results store with measured laws."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """How many parameters store this knowledge: from your own measured law, else the paper's."""
    from kcap.experiments.plan import dataset_bits, parse_bits, plan

    if (bits is None) == (dataset is None):
        raise KcapError("--bits", "give either --bits B or --dataset DIR")
    family = None
    if dataset is not None:
        total, family = dataset_bits(dataset)
    else:
        total = parse_bits(bits)
    result = plan(
        total, exposures=exposures, arch=arch, db=db if db.is_file() else None, family=family
    )
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    r_lo = "?" if result.R_low is None else f"{result.R_low:.2f}"
    r_hi = "?" if result.R_high is None else f"{result.R_high:.2f}"
    console = Console()
    console.print(
        f"To store [bold]{_si(result.bits)}[/] bits seen {result.exposures} times each, a "
        f"[bold]{result.arch}[/] model needs about [bold]P = {_si(result.P)}[/] parameters "
        f"(interval {_si(result.P_low)} – {_si(result.P_high)})."
    )
    console.print(
        f"R = {result.R:.2f} bits/param [{r_lo}, {r_hi}], from the {result.source}: {result.detail}"
    )
    console.print(
        "P counts every parameter once, except embedding rows of tokens the data never uses."
    )
