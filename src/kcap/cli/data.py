"""`kcap data ...`: generate datasets with their exact bit content, and show documents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kcap.data.biod import BioDParams
from kcap.data.dataset import (
    DEFAULT_EVAL_SEED,
    build_biod,
    build_bios,
    check_biod_args,
    check_bios_args,
    check_tokenizer_args,
    load_dataset,
    prepare_out_dir,
    write_dataset,
)
from kcap.data.documents import label_name

app = typer.Typer(
    help="Generate synthetic knowledge datasets and inspect them.", no_args_is_help=True
)
err = Console(stderr=True)

OUT = typer.Option(..., "--out", help="Output directory (must be empty unless --force).")
SEED = typer.Option(0, "--seed", help="Random seed; a seed gives a byte-identical dataset.")
VOCAB = typer.Option(2048, "--vocab", help="Tokenizer vocabulary size (BPE merges + specials).")
TOKENIZER = typer.Option("bpe", "--tokenizer", help="Tokenizer kind: bpe or word.")
FORCE = typer.Option(False, "--force", help="Overwrite a non-empty --out.")
JSON = typer.Option(False, "--json", help="Also print the manifest as JSON to stdout.")


def _build(fn, out: Path, force: bool, json_out: bool, **kwargs) -> None:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("starting")
        manifest, population, tok = fn(
            progress=lambda msg: progress.update(task, description=msg), **kwargs
        )
        progress.update(task, description=f"writing {out}")
        write_dataset(out, manifest, population, tok, force=force)
    _summary(manifest, out)
    if json_out:
        typer.echo(json.dumps(manifest, indent=2))


def _summary(manifest: dict, out: Path) -> None:
    bits = manifest["bits"]
    table = Table(title=f"{manifest['kind']} dataset -> {out}", show_header=False)
    for k, v in manifest["params"].items():
        table.add_row(k, str(v))
    for k in ("name", "value", "diversity", "total"):
        table.add_row(f"bits.{k}", f"{bits[k]:,.0f}")
    vocab = manifest["vocab"]
    table.add_row("vocab (used / size)", f"{vocab['used_tokens']} / {vocab['vocab_size']}")
    table.add_row("tokens per document", f"{vocab['mean_tokens_per_document']:.1f}")
    err.print(table)


@app.command("bios")
def bios(
    n: int = typer.Option(..., "--n", help="Number of people N (1 <= N <= 1.6e8)."),
    seed: int = SEED,
    variant: str = typer.Option("online", "--variant", help="online, simple or fullname."),
    out: Path = OUT,
    vocab: int = VOCAB,
    tokenizer: str = TOKENIZER,
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Generate bioS(N): template biographies of N people (47.6 bits of attributes each)."""
    check_bios_args(n, variant)
    check_tokenizer_args(tokenizer, vocab)
    prepare_out_dir(out, force)
    _build(
        build_bios,
        out,
        force,
        json_out,
        n=n,
        seed=seed,
        variant=variant,
        vocab=vocab,
        tokenizer=tokenizer,
    )


@app.command("biod")
def biod(
    n: int = typer.Option(..., "--n", help="Number of people N."),
    k: int = typer.Option(..., "--k", help="Attributes per person K."),
    c: int = typer.Option(..., "--c", help="Chunks per value C."),
    d: int = typer.Option(..., "--d", help="Distinct chunks per attribute D (D <= T^L)."),
    l: int = typer.Option(..., "--l", help="Tokens per chunk L."),  # noqa: E741
    t: int = typer.Option(..., "--t", help="Alphabet size T."),
    seed: int = SEED,
    out: Path = OUT,
    vocab: int = VOCAB,
    tokenizer: str = TOKENIZER,
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Generate bioD(N, K, C, D, L, T): each value is C chunks from a set of D per attribute."""
    params = BioDParams(n=n, k=k, c=c, d=d, l=l, t=t)
    check_biod_args(params)
    check_tokenizer_args(tokenizer, vocab)
    prepare_out_dir(out, force)
    _build(build_biod, out, force, json_out, p=params, seed=seed, vocab=vocab, tokenizer=tokenizer)


_COLORS = ["cyan", "green", "yellow", "magenta", "blue", "red", "bright_cyan", "bright_green"]


@app.command("show")
def show(
    path: Path = typer.Argument(..., help="Dataset directory."),
    count: int = typer.Option(3, "--count", help="How many documents to print."),
    exposure: int = typer.Option(0, "--exposure", help="Which training exposure to render."),
    eval_: bool = typer.Option(False, "--eval", help="Render the evaluation documents instead."),
) -> None:
    """Print documents with their knowledge spans marked [label: value]."""
    ds = load_dataset(path)
    source = ds.source(eval_=eval_, eval_seed=DEFAULT_EVAL_SEED)
    out = Console()
    for doc in source.documents(exposure, np.arange(min(count, ds.n))):
        text = doc.text
        rich = Text()
        pos = 0
        for span in doc.spans():
            rich.append(text[pos : span.start])
            color = _COLORS[span.label % len(_COLORS)]
            tag = label_name(span.label) + (f"#{span.index}" if span.index else "")
            rich.append(f"[{tag}: ", style="dim")
            rich.append(text[span.start : span.end], style=f"bold {color}")
            rich.append("]", style="dim")
            pos = span.end
        rich.append(text[pos:])
        out.print(f"[bold]person {doc.person}[/bold]")
        out.print(rich)
        out.print()
