"""`kcap export RUN_DIR --hf OUT_DIR`: write a run as a Hugging Face transformers checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from kcap.atomic import require_writable, staged_dir
from kcap.errors import KcapError


def export(
    run_dir: Path = typer.Argument(..., help="A kcap run directory with a checkpoint."),
    hf: Path = typer.Option(..., "--hf", help="Output directory for the transformers checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --hf directory."),
) -> None:
    """Export a trained run (safetensors + config + tokenizer), where an architecture maps."""
    from kcap.models.hf import export_hf, hf_architecture
    from kcap.training.trainer import load_run

    require_writable(hf, "--hf")
    if hf.exists() and any(hf.iterdir()) and not force:
        raise KcapError("--hf", f"{hf} is not empty (use --force)")
    _, dataset, model, _ = load_run(run_dir)
    arch = hf_architecture(model.cfg)  # refuses (one line) before anything is written
    with staged_dir(hf) as tmp:  # replaces --hf only once the whole checkpoint is written
        export_hf(model, tmp, tokenizer_json=dataset.path / "tokenizer.json")
    Console(stderr=True).print(f"exported {run_dir} as {arch} to {hf}")
