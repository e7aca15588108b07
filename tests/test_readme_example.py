"""The README's "Use kcap from Python" example runs as written, and what it prints is what
`kcap measure --hf` says of the model it trained."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kcap
from kcap.cli.main import app

transformers = pytest.importorskip("transformers")
transformers.utils.logging.disable_progress_bar()

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Use kcap from Python"


def readme_example() -> str:
    """The first python code block of the README's section on the Python API."""
    text = README.read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"no python block under {SECTION!r}"
    return blocks[0]


def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 20  # a notebook cell, not a program
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.strip().splitlines()[-1]

    data, model, m, stream = (namespace[k] for k in ("data", "model", "m", "stream"))
    assert isinstance(m, kcap.Measurement) and m.kind == "bios"
    assert m.data_bits == data.bits["total"]
    assert m.P == kcap.parameter_counts(model, data).P
    assert (
        printed == f"{m.bits['total']:,.0f} of {m.data_bits:,.0f} bits, P = {m.P:,}, R = {m.R:.3f}"
    )
    # the loop took one optimizer step per batch of the whole exposure-exact stream
    steps = {int(state["step"]) for state in namespace["opt"].state.values()}
    assert steps == {-(-stream.stream().count_windows() // 4)}
    # the same model, saved as a checkpoint, measured by the CLI: the same figures
    model.save_pretrained(tmp_path / "hf")
    r = CliRunner().invoke(
        app, ["measure", "--hf", str(tmp_path / "hf"), "--dataset", str(data.path), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == m.to_dict()
