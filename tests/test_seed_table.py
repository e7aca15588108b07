"""`benchmarks/seed_table.py`, which makes the README's seed tables: mean R over seeds and range."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_table.py"
spec = importlib.util.spec_from_file_location("seed_table", SCRIPT)
seed_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(seed_table)


def _row(arch: str, n: int, seed: int, R: float, exposures: int = 100, d: int = 32) -> dict:
    return {"arch": arch, "N": n, "seed": seed, "R": R, "P": 50_000, "exposures": exposures,
            "d_model": d, "family": "bioD", "quantize": ""}  # fmt: skip


def test_cells_are_the_mean_over_seeds_with_their_range_and_count():
    rows = [_row("gpt2", 400, s, r) for s, r in enumerate((0.2, 0.3, 0.4))]
    rows += [_row("llama", 400, 0, 0.25), _row("llama", 800, 0, 0.5)]
    rows += [_row("gpt2", 400, 0, 9.0, exposures=1000), _row("gpt2", 400, 0, 9.0, d=16)]
    table = seed_table.seed_table(rows, 100, d_model=32).splitlines()
    assert table[0] == "| model | P | R at N = 400 (seeds) | R at N = 800 (seeds) |"
    assert table[2] == "| gpt2 d 32 | 50,000-50,000 | 0.30 [0.20, 0.40] (3) | — |"
    assert table[3] == "| llama d 32 | 50,000-50,000 | 0.25 (1) | 0.50 (1) |"
    assert len(table) == 4  # the 1000-exposure and d-16 rows are left out
