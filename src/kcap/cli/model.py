"""`kcap model ...`: inspect a model preset (architecture and parameter counts, SPEC §4-§5)."""

from __future__ import annotations

import json

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from kcap.errors import KcapError
from kcap.models import ModelConfig, count_parameters_from_config, preset

app = typer.Typer(
    help="Inspect model presets: architecture and parameter counts.", no_args_is_help=True
)


def parse_overrides(items: list[str]) -> dict[str, object]:
    """`key=value` strings -> {key: yaml.safe_load(value)}; later keys win."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KcapError("--set", f"{item!r} is not of the form key=value")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise KcapError(f"--set {key.strip()}", f"unparseable value {value!r}") from e
    return out


def build_config(name: str, vocab_size: int, overrides: dict[str, object]) -> ModelConfig:
    """`preset(name, vocab_size, **overrides)` with errors as one-line `KcapError`s."""
    from kcap.training.config import did_you_mean, override_keys, validation_error

    for key in overrides:
        if key == "vocab_size":
            raise KcapError("vocab_size", "is --vocab's; give --vocab instead of --set")
        if key not in override_keys():
            raise KcapError(key, f"unknown key{did_you_mean(key, override_keys())}")
    try:
        return preset(name, vocab_size, **overrides)
    except ValidationError as e:
        err = validation_error(e, ModelConfig)
        key, msg = err.field, str(err).split(": ", 1)[1]
        field = "--vocab" if key == "vocab_size" else key if key in overrides else None
        raise KcapError(field or ("--set" if overrides else "preset"), msg) from None
    except ValueError as e:
        raise KcapError("preset", str(e)) from None


@app.command("info")
def info(
    name: str = typer.Argument(..., metavar="PRESET", help="e.g. gpt2-12-12, gpt2-2-2-moe32."),
    vocab: int = typer.Option(2048, "--vocab", help="Vocabulary size of the model."),
    used: int | None = typer.Option(
        None, "--used", help="Vocabulary tokens occurring in the data, for P (default: --vocab)."
    ),
    sets: list[str] = typer.Option(
        [], "--set", help="Override a ModelConfig field, key=value (YAML value); repeatable."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show a preset's architecture and its parameter counts (total, P, non-embedding, active)."""
    cfg = build_config(name, vocab, parse_overrides(sets))
    n_used = vocab if used is None else used
    if not 0 <= n_used <= cfg.vocab_size:
        raise KcapError("--used", f"{n_used} must be in [0, vocab_size={cfg.vocab_size}]")
    counts = count_parameters_from_config(cfg, n_used_tokens=n_used)
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "preset": name,
                    "config": cfg.model_dump(),
                    "rotary_dims": cfg.rotary_dims,
                    "n_used_tokens": n_used,
                    "total": counts.total,
                    "P": counts.P,
                    "non_embedding": counts.non_embedding,
                    "active": counts.active,
                },
                indent=2,
            )
        )
        return
    table = Table(title=f"{name} (vocab {cfg.vocab_size}, {n_used} used)", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows: list[tuple[str, str]] = [
        ("d_model", str(cfg.d_model)),
        ("layers", str(cfg.n_layer)),
        ("heads", str(cfg.n_head)),
        ("kv heads", str(cfg.kv_heads)),
        ("rotated dims", f"{cfg.rotary_dims} of {cfg.head_dim} per head"),
    ]
    if cfg.is_moe:
        rows += [
            ("hidden (per expert)", str(cfg.expert_hidden)),
            ("experts", f"{cfg.n_experts} (top-{cfg.top_k})"),
        ]
    else:
        rows += [("hidden", str(cfg.hidden)), ("experts", "-")]
    for label, value in (
        ("total", counts.total),
        ("P", counts.P),
        ("non-embedding", counts.non_embedding),
        ("active", counts.active),
    ):
        rows.append((label, f"{value:,} ({value / 1e6:.2f}M)"))
    for label, value in rows:
        table.add_row(label, value)
    Console().print(table)
