"""The CLI: dataset commands write manifests, bad input is one line + exit 2 + nothing written."""

import json

import pytest
from typer.testing import CliRunner

from kcap import __version__
from kcap.cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_version_and_help():
    assert run("--version").output.strip() == f"kcap {__version__}"
    for cmd in (
        ["data", "bios"],
        ["data", "biod"],
        ["data", "show"],
        ["train"],
        ["measure"],
        ["demo"],
        ["runs"],
    ):
        r = run(*cmd, "--help")
        assert r.exit_code == 0, r.output
        assert "Usage" in r.output


def test_bios_manifest_and_json(tmp_path):
    out = tmp_path / "ds"
    r = run(
        "data",
        "bios",
        "--n",
        50,
        "--seed",
        1,
        "--variant",
        "online",
        "--out",
        out,
        "--vocab",
        500,
        "--json",
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    printed = json.loads(r.stdout[r.stdout.index("{") :])
    assert printed == manifest
    assert manifest["kind"] == "bios" and manifest["params"] == {"n": 50, "variant": "online"}
    assert manifest["seed"] == 1
    assert manifest["bits"]["total"] == pytest.approx(
        50 * (27.2534966 - 5.6438562 + 47.5917), rel=1e-5
    )
    assert 0 < manifest["vocab"]["used_tokens"] <= manifest["vocab"]["vocab_size"]


def test_same_seed_byte_identical(tmp_path):
    for name in ("a", "b"):
        assert (
            run(
                "data",
                "biod",
                "--n",
                20,
                "--k",
                2,
                "--c",
                2,
                "--d",
                8,
                "--l",
                2,
                "--t",
                6,
                "--seed",
                9,
                "--out",
                tmp_path / name,
                "--vocab",
                400,
            ).exit_code
            == 0
        )
    for f in ("manifest.json", "population.npz", "tokenizer.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["bios", "--n", "0"], "--n"),
        (["bios", "--n", "160000001"], "--n"),
        (["bios", "--n", "10", "--variant", "weird"], "--variant"),
        (["biod", "--n", "10", "--k", "0", "--c", "1", "--d", "2", "--l", "1", "--t", "4"], "--k"),
        (["biod", "--n", "10", "--k", "1", "--c", "1", "--d", "17", "--l", "2", "--t", "4"], "--d"),
        (["bios", "--n", "10", "--tokenizer", "sentencepiece"], "--tokenizer"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, field):
    out = tmp_path / "out"
    r = run("data", *args, "--out", out)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and field in lines[0], r.output
    assert "Traceback" not in r.output
    assert not out.exists()


def test_non_empty_out_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = run("data", "bios", "--n", 10, "--out", out, "--vocab", 400)
    assert r.exit_code == 2 and "--force" in r.output
    assert (out / "keep.txt").exists()
    assert run("data", "bios", "--n", 10, "--out", out, "--vocab", 400, "--force").exit_code == 0
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()


def test_unwritable_out(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = run("data", "bios", "--n", 10, "--out", ro / "x")
        import os

        if os.geteuid() == 0:  # root writes anywhere; use a path under a file instead
            (tmp_path / "file").write_text("")
            r = run("data", "bios", "--n", 10, "--out", tmp_path / "file" / "x")
        assert r.exit_code == 2 and "--out" in r.output
    finally:
        ro.chmod(0o700)


def test_show_marks_spans(bios_dir):
    r = run("data", "show", bios_dir, "--count", 2)
    assert r.exit_code == 0, r.output
    for tag in ("[name: ", "[birth_date: ", "[employer: ", "[gender: "):
        assert tag in r.output


def test_train_config_errors_are_one_line(tmp_path, bios_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: {{path: {bios_dir}}}\ntraining: {{lr: -1}}\n")
    r = run("train", cfg, "--out", tmp_path / "run")
    assert r.exit_code == 2 and "training.lr" in r.output, r.output
    r = run(
        "train",
        cfg,
        "--out",
        tmp_path / "run",
        "--set",
        "training.lr=0.001",
        "--set",
        "model.preset=gpt7-1-1",
    )
    assert r.exit_code == 2 and "model" in r.output and "Traceback" not in r.output, r.output
    cfg.write_text(f"dataset: {{path: {bios_dir}}}\ntraining: {{device: tpu}}\n")
    r = run("train", cfg, "--out", tmp_path / "run")
    assert r.exit_code == 2 and "training.device" in r.output and "cpu" in r.output


def test_train_with_a_missing_dataset_writes_nothing(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: {{path: {tmp_path / 'nowhere'}}}\n")
    r = run("train", cfg, "--out", tmp_path / "run", "--db", tmp_path / "k.db")
    assert r.exit_code == 2 and "dataset" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "run").exists()
