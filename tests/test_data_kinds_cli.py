"""`kcap data junk|random|bior` write manifests like bios/biod; bad input is one line, exit 2,
nothing written; a train config can name (and generate) every kind."""

import json
import math

import pytest
from typer.testing import CliRunner

from kcap.cli.main import app
from kcap.data.bios import bios_bits

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help():
    for cmd in ("junk", "random", "bior"):
        r = run("data", cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


@pytest.mark.parametrize(
    ("flags", "domain"), [([], "none"), (["--domain-token"], "useful"), (["--junk-token"], "junk")]
)
def test_junk_manifest(tmp_path, flags, domain):
    out = tmp_path / "ds"
    r = run(
        "data",
        "junk",
        "--n",
        20,
        "--ratio",
        7,
        "--junk",
        "random",
        *flags,
        "--seed",
        2,
        "--out",
        out,
        "--vocab",
        500,
        "--json",
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert json.loads(r.stdout[r.stdout.index("{") :]) == manifest
    assert manifest["kind"] == "junk" and manifest["seed"] == 2
    assert manifest["params"] == {"n": 20, "ratio": 7, "junk": "random", "domain": domain}
    assert manifest["bits"] == pytest.approx(bios_bits(20))  # the useful people only
    assert manifest["mixture"]["useful_token_fraction"] == pytest.approx(1 / 8)
    assert {p.name for p in out.iterdir()} == {
        "manifest.json",
        "population.npz",
        "tokenizer.json",
        "tokenizer.meta.json",
    }


def test_repetitive_junk_writes_its_population(tmp_path):
    out = tmp_path / "ds"
    r = run(
        "data",
        "junk",
        "--n",
        20,
        "--ratio",
        1,
        "--junk",
        "repetitive",
        "--junk-n",
        30,
        "--out",
        out,
        "--vocab",
        500,
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["junk_n"] == 30 and (out / "junk_population.npz").is_file()


def test_random_manifest(tmp_path):
    out = tmp_path / "ds"
    r = run("data", "random", "--m", 50, "--s", 16, "--v", 64, "--seed", 1, "--out", out)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "random" and manifest["params"] == {"m": 50, "s": 16, "v": 64}
    assert manifest["bits"]["total"] == pytest.approx(50 * 16 * math.log2(64))
    assert manifest["vocab"]["vocab_size"] == 65
    shown = run("data", "show", out, "--count", 1)
    assert shown.exit_code == 0 and "<t" in shown.output


def test_same_seed_byte_identical(tmp_path):
    for name in ("a", "b"):
        assert (
            run(
                "data",
                "junk",
                "--n",
                10,
                "--ratio",
                3,
                "--junk",
                "repetitive",
                "--junk-n",
                5,
                "--out",
                tmp_path / name,
                "--vocab",
                400,
            ).exit_code
            == 0
        )
    for f in ("manifest.json", "population.npz", "junk_population.npz", "tokenizer.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["junk", "--n", "0", "--ratio", "1", "--junk", "random"], "--n"),
        (["junk", "--n", "5", "--ratio", "0", "--junk", "random"], "--ratio"),
        (["junk", "--n", "5", "--ratio", "1", "--junk", "weird"], "--junk"),
        (
            [
                "junk",
                "--n",
                "5",
                "--ratio",
                "1",
                "--junk",
                "random",
                "--domain-token",
                "--junk-token",
            ],
            "--junk-token",
        ),
        (
            ["junk", "--n", "5", "--ratio", "1", "--junk", "random", "--tokenizer", "x"],
            "--tokenizer",
        ),
        (["random", "--m", "0"], "--m"),
        (["random", "--m", "5", "--v", "1"], "--v"),
        (["random", "--m", "5", "--s", "0"], "--s"),
        (["bior", "--n", "5", "--model", "/nonexistent/model"], "--model"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, field):
    out = tmp_path / "ds"
    r = run("data", *args, "--out", out)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {field}:"), r.output
    assert not out.exists()


_MODEL = {"preset": "gpt2-1-1", "overrides": {"d_model": 32}}
_TRAIN = {"exposures": 2, "batch_size": 4, "window": 32, "threads": 1}


@pytest.mark.parametrize(
    "dataset",
    [
        {"kind": "junk", "n": 8, "ratio": 3, "junk": "random", "domain": "useful", "vocab": 500},
        {"kind": "junk", "n": 8, "ratio": 1, "junk": "repetitive", "junk_n": 6, "vocab": 500},
        {"kind": "random", "m": 16, "s": 8, "v": 16},
    ],
)
def test_train_config_generates_each_kind(tmp_path, dataset):
    from kcap.training.config import parse_config
    from kcap.training.trainer import Trainer

    cfg = parse_config({"dataset": dataset, "model": _MODEL, "training": _TRAIN})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    r = trainer.fit()
    assert r.kind == dataset["kind"]
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["exposures"] == {"target": 2, "min": 2, "max": 2}
    if dataset["kind"] == "junk":
        stream = summary["stream"]
        assert stream["junk_tokens"] == dataset["ratio"] * stream["useful_tokens"]
        assert stream["junk_windows"] == dataset["ratio"] * stream["useful_windows"]
        assert r.n_people == 8 and r.data_bits == pytest.approx(bios_bits(8)["total"])


@pytest.mark.parametrize(
    ("dataset", "field"),
    [
        ({"kind": "junk", "n": 8}, "dataset"),
        ({"kind": "random"}, "dataset"),
        ({"kind": "bior", "n": 8}, "dataset"),
        ({"kind": "junk", "n": 8, "ratio": 0, "junk": "random"}, "dataset.ratio"),
        ({"kind": "junk", "n": 8, "ratio": 1, "junk": "weird"}, "dataset.junk"),
    ],
)
def test_config_errors(dataset, field):
    from kcap.errors import KcapError
    from kcap.training.config import parse_config

    with pytest.raises(KcapError) as e:
        parse_config({"dataset": dataset})
    assert e.value.field == field


def test_old_configs_dump_as_before():
    """Configs of the first kinds dump exactly the fields they had, so their hashes (run ids,
    checkpoint checks) do not change."""
    from kcap.training.config import parse_config

    cfg = parse_config({"dataset": {"kind": "bios", "n": 100}})
    old = {"path", "kind", "n", "seed", "variant", "k", "c", "d", "l", "t", "vocab", "tokenizer"}
    assert set(cfg.model_dump()["dataset"]) == old
    junk = parse_config({"dataset": {"kind": "junk", "n": 5, "ratio": 3, "junk": "random"}})
    assert set(junk.model_dump()["dataset"]) == old | {"ratio", "junk"}
    assert parse_config(junk.model_dump()) == junk


def test_show_junk_documents(tmp_path):
    out = tmp_path / "ds"
    assert (
        run(
            "data",
            "junk",
            "--n",
            5,
            "--ratio",
            1,
            "--junk",
            "random",
            "--junk-token",
            "--out",
            out,
            "--vocab",
            400,
        ).exit_code
        == 0
    )
    shown = run("data", "show", out, "--junk", "--count", 2)
    assert shown.exit_code == 0 and shown.output.count("<|junk|>") == 2
    useful = run("data", "show", out, "--count", 2)
    assert useful.exit_code == 0 and "<|junk|>" not in useful.output
    r = run("data", "show", out, "--junk", "--eval")
    assert r.exit_code == 2 and r.output.startswith("Error: --junk:")
