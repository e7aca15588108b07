"""`kcap model info`: parameter counts of presets, as JSON or a table; one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kcap.cli.main import app

runner = CliRunner()


def _info(*args: str):
    return runner.invoke(app, ["model", "info", *args])


def test_gpt2_small_json():
    res = _info("gpt2-12-12", "--vocab", "3275", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    L, d, V = 12, 768, 3275
    # 12 L d^2 weights + per-layer biases/LNs (13 d) + final LN (2 d) + tied embedding (V d)
    exact = 12 * L * d * d + 13 * L * d + 2 * d + V * d
    assert out["P"] == out["total"] == out["active"] == exact == 87_571_200
    assert out["P"] == pytest.approx(12 * L * d * d + V * d, rel=0.005)  # the paper's ~88M
    assert out["non_embedding"] == exact - V * d
    assert out["preset"] == "gpt2-12-12" and out["n_used_tokens"] == V
    assert out["config"]["d_model"] == d and out["config"]["vocab_size"] == V


def test_overrides_used_tokens_and_moe():
    res = _info(
        "gpt2-2-2-moe4",
        "--vocab",
        "100",
        "--used",
        "60",
        "--set",
        "top_k=2",
        "--set",
        "tied=false",
        "--json",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["config"]["top_k"] == 2 and out["config"]["tied"] is False
    d, E, expert = 128, 4, 2 * 128 * 128 + 2 * 128
    assert out["total"] - out["P"] == 2 * 40 * d  # unused rows of embedding and head
    assert out["P"] - out["active"] == 2 * (E - 2) * expert


def test_table():
    res = _info("mistral-2-4", "--vocab", "64")
    assert res.exit_code == 0, res.output
    for word in ("d_model", "256", "kv heads", "hidden", "896", "non-embedding", "active"):
        assert word in res.output
    assert "64 of 64 per head" in res.output  # Mistral rotates every dim
    res = _info("gpt2-2-2", "--set", "d_model=24", "--set", "rotary_min_dims=16")
    assert res.exit_code == 0 and "12 of 12 per head" in res.output  # the lab's v3 floor
    assert "2 of 12 per head" in _info("gpt2-2-2", "--set", "d_model=24").output
    res = _info("gpt2-1-1-moe8")
    assert res.exit_code == 0 and "8 (top-1)" in res.output


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["gpt3-1-1"], "preset"),
        (["gpt2-1-1", "--set", "top_k=3"], "top_k"),
        (["gpt2-1-1", "--set", "no_such_field=1"], "no_such_field"),
        (["gpt2-1-1", "--set", "tied"], "--set"),
        (["gpt2-1-1", "--set", "mlp_ratio=[1"], "--set mlp_ratio"),
        (["gpt2-1-1", "--vocab", "10", "--used", "11"], "--used"),
    ],
)
def test_errors_are_one_line_exit_2(args, field):
    res = _info(*args)
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {field}: "), res.output
