"""The `kcap` command line (Typer)."""
