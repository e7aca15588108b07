"""Bad input, every kind the CLI meets: one line ``Error: ...``, exit code 2, no traceback, and
nothing written (issue 14, item 6).

One table of cases. Each case builds its inputs in its own folder (also the working directory,
so default outputs such as ``kcap.db`` land there), then runs one `kcap` command line through
Typer's runner. The output must be exactly one non-empty line, starting with ``Error: `` and
naming the field (an option, a config key, or the path that cannot be written), and matching
the case's pattern; and every file under the case's folder and under the shared inputs (the
datasets, the run, the Hugging Face checkpoints) must be byte-for-byte what it was before.

A full disk and paths that cannot be written are simulated (the tests run as root, which
writes anywhere): a write function is patched to write a few bytes and then raise
``OSError(ENOSPC)`` / ``OSError(EACCES)``, as a real one does; a path below a regular file is a
path that really cannot be created.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kcap.cli.main import app

# ------------------------------------------------------------------------------ the inputs


@dataclass
class Env:
    """Where a case runs: its own folder, and the shared inputs (read-only for every case)."""

    tmp: Path
    bios: Path  # bioS(40), vocabulary 600
    biod: Path  # bioD(30), vocabulary 400: another tokenizer
    run: Path  # a run on ``bios`` with a checkpoint (gpt2-1-1, d = 32), never measured
    hf: dict[str, Path]  # tiny transformers checkpoints, by what is wrong with them

    @property
    def shared(self) -> list[Path]:
        return [self.bios, self.biod, self.run, *self.hf.values()]

    def config(self, **sections) -> dict:
        """A tiny valid run config on ``bios``, with ``sections`` merged in."""
        cfg = {
            "dataset": {"path": str(self.bios)},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
            "training": {"exposures": 1, "batch_size": 2, "window": 64, "threads": 1},
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        return cfg

    def yaml(self, name: str, data) -> Path:
        return self.text(name, yaml.safe_dump(data, sort_keys=False))

    def text(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def cfg(self, **sections) -> Path:
        return self.yaml("c.yaml", self.config(**sections))

    def grid(self, **keys) -> Path:
        """A grid file whose base is the tiny config."""
        return self.yaml("g.yaml", {"base": self.config(), **keys})

    @property
    def file(self) -> Path:
        """A regular file: nothing can be created below it."""
        path = self.tmp / "file"
        path.write_text("not a folder\n")
        return path

    def db(self, name: str = "kcap.db", version: int | None = None) -> Path:
        """A results store (empty); ``version``: stamped with that schema version."""
        from kcap.experiments.store import ResultsStore

        path = self.tmp / name
        ResultsStore(path).close()
        if version is not None:
            with sqlite3.connect(path) as conn:
                conn.execute(f"PRAGMA user_version = {version}")
            conn.close()
        return path

    def run_copy(self, **config) -> Path:
        """A copy of ``run`` whose config.yaml has ``config`` sections merged in."""
        out = self.tmp / "run"
        shutil.copytree(self.run, out)
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        for key, value in config.items():
            cfg[key] = {**cfg[key], **value}
        (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        return out


def _snapshot(roots: list[Path]) -> dict[str, str]:
    """Every folder and file under ``roots`` (and the roots' siblings' names: staged temporary
    folders are made beside their target), files by content hash."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            out[str(root)] = "absent"
            continue
        for path in [root, *sorted(root.rglob("*"))]:
            if path.is_dir():
                out[str(path)] = "dir"
            else:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        for sibling in root.parent.iterdir():
            out.setdefault(str(sibling), "sibling")
    return out


# ------------------------------------------------------------------------------ simulated faults


def _failing_write(code: int) -> Callable:
    """A stand-in for a write call: it writes a little, then fails like a real one with
    ``code`` (no file name: a write to an open file does not know it)."""

    def fail(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(code, os.strerror(code))

    return fail


def _full_disk_on(target: str, method: str | None = None) -> Callable:
    """Patch ``target`` (``module.attr``, or a class and ``method``) to run out of disk space."""

    def patch(env: Env, mp: pytest.MonkeyPatch) -> None:
        fail = _failing_write(errno.ENOSPC)
        if method is None:
            mp.setattr(target, fail)
        else:

            def fail_method(self, path, *args, **kwargs):
                return fail(path)

            mp.setattr(f"{target}.{method}", fail_method)

    return patch


def _write_text_fails(code: int) -> Callable:
    """Patch `Path.write_text`, the way kcap writes small files, to fail with ``code``."""

    def patch(env: Env, mp: pytest.MonkeyPatch) -> None:
        fail = _failing_write(code)
        mp.setattr(Path, "write_text", lambda self, *a, **k: fail(self))

    return patch


def _read_only_fs(env: Env, mp: pytest.MonkeyPatch) -> None:
    """No folder can be created (a read-only file system)."""

    def mkdir(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    mp.setattr("os.mkdir", mkdir)


def _export_runs_out_of_space(env: Env, mp: pytest.MonkeyPatch) -> None:
    """`export_hf` writes the config, then the disk is full."""

    def export_hf(model, out_dir, tokenizer_json=None):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "config.json").write_bytes(b"{")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    mp.setattr("kcap.models.hf.export_hf", export_hf)


# ------------------------------------------------------------------------------ the cases


@dataclass(frozen=True)
class Bad:
    """One bad input: the command line (built in the case's folder), the field the error line
    must name (``{tmp}`` is the case's folder), a pattern it must match, an optional fault."""

    id: str
    argv: Callable[[Env], list]
    field: str
    match: str
    fault: Callable[[Env, pytest.MonkeyPatch], None] | None = None
    needs_hf: bool = False
    files: dict[str, str] | None = None  # more input files, written before ``argv`` is built


CASES = [
    # --- invalid YAML: the file and the line
    Bad(
        "yaml-config",
        lambda e: ["train", e.text("c.yaml", "dataset: {path: x\ntraining: [1,\n"), "--out",
                   e.tmp / "run"],
        "CONFIG",
        r"c\.yaml line 2, column \d+: not valid YAML",
    ),
    Bad(
        "yaml-config-not-a-mapping",
        lambda e: ["train", e.text("c.yaml", "- dataset\n- model\n"), "--out", e.tmp / "run"],
        "CONFIG",
        r"must hold a mapping of sections",
    ),
    Bad(
        "yaml-grid",
        lambda e: ["sweep", e.text("g.yaml", "base: {a: 1}\nproduct:\n  x: [1\n"), "--dry-run"],
        "GRID",
        r"g\.yaml line \d+, column \d+: not valid YAML",
    ),
    Bad(
        "yaml-grid-base-file",
        lambda e: ["sweep", e.yaml("g.yaml", {"base": "base.yaml"}), "--db", e.tmp / "k.db"],
        "grid.base",
        r"base\.yaml line 2, column \d+: not valid YAML",
        files={"base.yaml": "dataset: [\n"},
    ),
    Bad(
        "yaml-quantize-grid",
        lambda e: ["quantize", "--grid", e.text("g.yaml", "base: {a: }}\n"), "--out", e.tmp,
                   "--bits", 8],
        "GRID",
        r"g\.yaml line 1, column \d+: not valid YAML",
    ),
    Bad(
        "yaml-set-value",
        lambda e: ["train", e.cfg(), "--out", e.tmp / "run", "--set", "training.lr=[1,"],
        "--set",
        r"training\.lr: value '\[1,' is not valid YAML",
    ),
    # --- unknown keys: a did-you-mean and the allowed keys
    Bad(
        "unknown-section",
        lambda e: ["train", e.cfg(trainig={"lr": 1e-3}), "--out", e.tmp / "run"],
        "trainig",
        r"unknown key; did you mean 'training'\? \(allowed: dataset, measurement, model, name, "
        r"training\)",
    ),
    Bad(
        "unknown-training-key",
        lambda e: ["train", e.cfg(training={"lrr": 1e-3}), "--out", e.tmp / "run"],
        "training.lrr",
        r"did you mean 'lr'\? \(allowed: .*batch_size.*\)",
    ),
    Bad(
        "unknown-dataset-key",
        lambda e: ["train", e.cfg(dataset={"kind": "bios", "n": 10, "vocb": 600}), "--out",
                   e.tmp / "run"],
        "dataset.vocb",
        r"did you mean 'vocab'\?",
    ),
    Bad(
        "unknown-model-override",
        lambda e: ["train", e.cfg(model={"overrides": {"d_modle": 32}}), "--out", e.tmp / "run"],
        "model.overrides",
        r"unknown key 'd_modle'; did you mean 'd_model'\? \(allowed: .*n_head.*\)",
    ),
    Bad(
        "unknown-grid-key",
        lambda e: ["sweep", e.grid(prodcut={"training.lr": [1e-3]}), "--dry-run"],
        "grid",
        r"unknown keys \['prodcut'\]; did you mean 'product'\? \(allowed: base, blocks",
    ),
    Bad(
        "unknown-grid-block-key",
        lambda e: ["sweep", e.grid(blocks=[{"sett": {"training.lr": 1e-3}}]), "--dry-run"],
        "grid.blocks[0]",
        r"unknown keys \['sett'\]; did you mean 'set'\?",
    ),
    Bad(
        "unknown-grid-product-key",
        lambda e: ["sweep", e.grid(product={"training.lrr": [1e-3]}), "--dry-run"],
        "training.lrr",
        r"did you mean 'lr'\? .*\(at training\.lrr=0\.001\)",
    ),
    Bad(
        "unknown-model-info-key",
        lambda e: ["model", "info", "gpt2-1-2", "--set", "d_modle=64"],
        "d_modle",
        r"^Error: d_modle: unknown key; did you mean 'd_model'\?",
    ),
    # --- out-of-range values: the field, what it allows, what was given
    Bad(
        "range-lr",
        lambda e: ["train", e.cfg(training={"lr": -1}), "--out", e.tmp / "run"],
        "training.lr",
        r"must be > 0(\.0)?; got -1$",
    ),
    Bad(
        "range-device",
        lambda e: ["train", e.cfg(training={"device": "tpu"}), "--out", e.tmp / "run"],
        "training.device",
        r"must be one of 'auto', 'cpu' or 'cuda'; got 'tpu'",
    ),
    Bad(
        "range-batch-size-type",
        lambda e: ["train", e.cfg(training={"batch_size": "eight"}), "--out", e.tmp / "run"],
        "training.batch_size",
        r"must be an integer; got 'eight'",
    ),
    Bad(
        "range-vocab",
        lambda e: ["train", e.cfg(dataset={"kind": "bios", "n": 10, "vocab": 100}), "--out",
                   e.tmp / "run"],
        "dataset.vocab",
        r"must be >= 300; got 100",
    ),
    Bad(
        "range-data-n",
        lambda e: ["data", "bios", "--n", 0, "--out", e.tmp / "ds"],
        "--n",
        r"must be between 1 and N0 = 160,000,000; got 0$",
    ),
    Bad(
        "range-data-biod-d",
        lambda e: ["data", "biod", "--n", 10, "--k", 1, "--c", 1, "--d", 17, "--l", 2, "--t", 4,
                   "--out", e.tmp / "ds"],
        "--d",
        r"must be at most T\^L = 4\^2; got 17$",
    ),
    Bad(
        "range-data-biod-name-pool",
        lambda e: ["data", "biod", "--n", 10, "--k", 1, "--c", 1, "--d", 4, "--l", 1, "--t", 4,
                   "--name-pool", 401, "--out", e.tmp / "ds"],
        "--name-pool",
        r"must be between 1 and 400 \(the smallest name pool\); got 401$",
    ),
    Bad(
        "range-data-biod-n-over-pool",
        lambda e: ["data", "biod", "--n", 9, "--k", 1, "--c", 1, "--d", 4, "--l", 1, "--t", 4,
                   "--name-pool", 2, "--out", e.tmp / "ds"],
        "--n",
        r"must be between 1 and name-pool³ = 8; got 9$",
    ),
    Bad(
        "range-name-pool-not-biod",
        lambda e: ["train", e.cfg(dataset={"kind": "bios", "n": 10, "name_pool": 5}), "--out",
                   e.tmp / "run"],
        "dataset",
        r"name_pool is only for bioD \(kind: biod\)",
    ),
    Bad(
        "range-data-random-v",
        lambda e: ["data", "random", "--m", 5, "--v", 1, "--out", e.tmp / "ds"],
        "--v",
        r"must be between 2 and 1,048,576; got 1$",
    ),
    Bad(
        "range-data-show-count",
        lambda e: ["data", "show", e.bios, "--count", 0],
        "--count",
        r"must be at least 1; got 0",
    ),
    Bad(
        "range-quantize-bits",
        lambda e: ["quantize", e.run, "--bits", 5, "--db", e.tmp / "k.db"],
        "--bits",
        r"must be one of 8, 4, 3, 2; got 5",
    ),
    Bad(
        "range-extract-lr",
        lambda e: ["extract", e.run, "--lr", -1, "--db", e.tmp / "k.db"],
        "--lr",
        r"must be > 0; got -1",
    ),
    Bad(
        "range-measure-max-people",
        lambda e: ["measure", e.run, "--max-people", 0],
        "max_people",
        r"must be >= 1; got 0",
    ),
    Bad(
        "range-model-info-used",
        lambda e: ["model", "info", "gpt2-1-2", "--vocab", 500, "--used", 501],
        "--used",
        r"vocab_size=500",
    ),
    Bad(
        "range-plan-exposures",
        lambda e: ["plan", "--bits", "5e6", "--exposures", 0],
        "--exposures",
        r"must be at least 1$",
    ),
    Bad(
        "range-runs-status",
        lambda e: ["runs", "--db", e.db(), "--status", "done"],
        "--status",
        r"must be one of running, finished, failed; got 'done'",
    ),
    # --- heads that do not divide the width
    Bad(
        "heads-train",
        lambda e: ["train", e.cfg(model={"preset": "gpt2-1-3"}), "--out", e.tmp / "run"],
        "model",
        r"d_model=32 is not divisible by n_head=3",
    ),
    Bad(
        "heads-model-info",
        lambda e: ["model", "info", "gpt2-2-3", "--set", "d_model=64"],
        "--set",
        r"d_model=64 is not divisible by n_head=3",
    ),
    Bad(
        "heads-grid-point",
        lambda e: ["sweep", e.grid(set={"model.preset": "gpt2-1-2"},
                                   product={"model.overrides.d_model": [32, 33]}), "--dry-run"],
        "model",
        r"d_model=33 is not divisible by n_head=2 \(at model\.overrides\.d_model=33\)",
    ),
    # --- a dataset / model vocabulary mismatch
    Bad(
        "vocab-override",
        lambda e: ["train", e.cfg(model={"overrides": {"vocab_size": 100}}), "--out",
                   e.tmp / "run"],
        "model.overrides",
        r"vocab_size cannot be overridden: the model's vocabulary is the dataset tokenizer's",
    ),
    Bad(
        "vocab-hf-smaller",
        lambda e: ["measure", "--hf", e.hf["small-vocab"], "--dataset", e.bios],
        "--hf",
        r"vocabulary 300 is smaller than the dataset tokenizer's 600",
        needs_hf=True,
    ),
    Bad(
        "vocab-run-dataset-replaced",
        lambda e: ["measure", e.run_copy(dataset={"path": str(e.biod)})],
        "RUN_DIR",
        r"checkpoint",
    ),
    # --- missing or foreign run directories
    Bad(
        "run-missing",
        lambda e: ["measure", e.tmp / "nowhere"],
        "RUN_DIR",
        r"nowhere is not a kcap run directory \(no config\.yaml\)",
    ),
    Bad(
        "run-foreign-measure",
        lambda e: ["measure", e.bios],
        "RUN_DIR",
        r"is not a kcap run directory",
    ),
    Bad(
        "run-foreign-export",
        lambda e: ["export", e.bios, "--hf", e.tmp / "hf"],
        "RUN_DIR",
        r"is not a kcap run directory",
    ),
    Bad(
        "run-foreign-quantize",
        lambda e: ["quantize", e.bios, "--bits", 8, "--db", e.tmp / "k.db"],
        "RUN_DIR",
        r"is not a kcap run directory",
    ),
    Bad(
        "run-foreign-extract",
        lambda e: ["extract", e.bios, "--db", e.tmp / "k.db"],
        "RUN_DIR",
        r"is not a kcap run directory",
    ),
    Bad(
        "run-without-checkpoint",
        lambda e: ["measure", e.yaml("run/config.yaml", e.config()).parent],
        "RUN_DIR",
        r"has no checkpoint yet",
    ),
    Bad(
        "run-without-checkpoint-generated-dataset",
        lambda e: ["measure", e.yaml("run/config.yaml", e.config(
            dataset={"path": None, "kind": "bios", "n": 8, "vocab": 300})).parent],
        "RUN_DIR",
        r"has no checkpoint yet",
    ),
    Bad(
        "run-resume-not-a-run",
        lambda e: ["train", e.cfg(), "--out", e.tmp / "run", "--resume", "--db",
                   e.tmp / "k.db"],
        "--resume",
        r"run is not a kcap run directory",
    ),
    Bad(
        "run-resume-without-checkpoint",
        lambda e: ["train", e.cfg(), "--out", e.yaml("run/config.yaml", e.config()).parent,
                   "--resume", "--db", e.tmp / "k.db"],
        "--resume",
        r"has no checkpoint",
    ),
    Bad(
        "run-dataset-missing",
        lambda e: ["data", "show", e.tmp],
        "dataset",
        r"no dataset at .* \(missing manifest\.json\)",
    ),
    Bad(
        "run-hf-missing",
        lambda e: ["measure", "--hf", e.tmp / "nowhere", "--dataset", e.bios],
        "--hf",
        r"is not a local Hugging Face checkpoint \(no config\.json\)",
    ),
    Bad(
        "run-sweep-folder-missing",
        lambda e: ["quantize", "--grid", e.grid(), "--out", e.tmp / "nowhere", "--bits", 8],
        "--out",
        r"no such sweep folder",
    ),
    Bad(
        "run-store-missing",
        lambda e: ["runs", "--db", e.tmp / "nope.db"],
        "--db",
        r"no results store at",
    ),
    # --- a checkpoint from another config
    Bad(
        "checkpoint-other-config-measure",
        lambda e: ["measure", e.run_copy(model={"overrides": {"d_model": 48}})],
        "RUN_DIR",
        r"checkpoint",
    ),
    Bad(
        "checkpoint-other-config-export",
        lambda e: ["export", e.run_copy(model={"overrides": {"d_model": 48}}), "--hf",
                   e.tmp / "hf"],
        "RUN_DIR",
        r"checkpoint",
    ),
    Bad(
        "checkpoint-other-config-resume",
        lambda e: ["train", e.cfg(model={"overrides": {"d_model": 48}}), "--out", e.run_copy(),
                   "--resume", "--db", e.tmp / "k.db"],
        "--resume",
        r"different config",
    ),
    # --- a results store from a newer schema
    Bad(
        "store-newer-runs",
        lambda e: ["runs", "--db", e.db(version=99)],
        "--db",
        r"schema v99,? (is )?newer than this kcap",
    ),
    Bad(
        "store-newer-report",
        lambda e: ["report", "--db", e.db(version=99), "--out", e.tmp / "report"],
        "--db",
        r"schema v99,? (is )?newer than this kcap",
    ),
    Bad(
        "store-newer-train",
        lambda e: ["train", e.cfg(), "--out", e.tmp / "run", "--db", e.db(version=99)],
        "--db",
        r"schema v99,? (is )?newer than this kcap",
    ),
    Bad(
        "store-newer-extract",
        lambda e: ["extract", e.run, "--steps", 1, "--db", e.db(version=99)],
        "--db",
        r"schema v99,? (is )?newer than this kcap",
    ),
    # --- paths that cannot be written
    Bad(
        "unwritable-data-out",
        lambda e: ["data", "bios", "--n", 10, "--vocab", 300, "--out", e.file / "ds"],
        "--out",
        r"file/ds is not writable",
    ),
    Bad(
        "unwritable-read-only-fs",
        lambda e: ["data", "bios", "--n", 10, "--vocab", 300, "--out", e.tmp / "ds"],
        "{tmp}/ds",
        r"^Error: \S+/ds: Read-only file system$",
        fault=_read_only_fs,
    ),
    Bad(
        "unwritable-export",
        lambda e: ["export", e.run, "--hf", e.file / "hf"],
        "--hf",
        r"file/hf is not writable",
    ),
    Bad(
        "unwritable-report",
        lambda e: ["report", "--db", e.db(), "--out", e.file / "report"],
        "--out",
        r"file/report is not writable",
    ),
    Bad(
        "unwritable-csv",
        lambda e: ["runs", "--db", e.db(), "--csv", e.file / "runs.csv"],
        "--csv",
        r"/file exists and is not a directory$",
    ),
    Bad(
        "unwritable-runs-export",
        lambda e: ["runs", "--db", e.db(), "--export", e.file / "runs.jsonl"],
        "--export",
        r"/file exists and is not a directory$",
    ),
    Bad(
        "unwritable-sweep-export",
        lambda e: ["sweep", e.grid(), "--db", e.tmp / "k.db", "--export", e.file / "r.jsonl"],
        "--export",
        r"/file exists and is not a directory$",
    ),
    Bad(
        "import-missing-file",
        lambda e: ["runs", "--db", e.tmp / "new.db", "--import", e.tmp / "nope.jsonl"],
        "--import",
        r"no such file: .*nope.jsonl$",
    ),
    Bad(
        "import-with-csv",
        lambda e: ["runs", "--db", e.db(), "--import", e.file, "--csv", e.tmp / "r.csv"],
        "--import",
        r"cannot be combined with --csv/--export$",
    ),
    Bad(
        "unwritable-csv-permission",
        lambda e: ["runs", "--db", e.db(), "--csv", e.tmp / "runs.csv"],
        "{tmp}/runs.csv",
        r": Permission denied$",
        fault=_write_text_fails(errno.EACCES),
    ),
    Bad(
        "unwritable-quantize-db",
        lambda e: ["quantize", e.run, "--bits", 8, "--db", e.file / "k.db"],
        "--db",
        r"/file exists and is not a directory$",
    ),
    Bad(
        "unwritable-extract-db",
        lambda e: ["extract", e.run, "--steps", 1, "--db", e.file / "k.db"],
        "--db",
        r"/file exists and is not a directory$",
    ),
    Bad(
        "unwritable-train-db",
        lambda e: ["train", e.cfg(), "--out", e.tmp / "run", "--db", e.file / "sub" / "k.db"],
        "--db",
        r"file/sub is not writable$",
    ),
    Bad(
        "unwritable-train-out",
        lambda e: ["train", e.cfg(), "--out", e.file / "run", "--db", e.tmp / "k.db"],
        "{tmp}/file",
        r": Not a directory$",
    ),
    # --- a full disk
    Bad(
        "full-disk-data-bios",
        lambda e: ["data", "bios", "--n", 10, "--vocab", 300, "--out", e.tmp / "ds"],
        "{tmp}/ds",
        r": No space left on device$",
        fault=_full_disk_on("kcap.tokenization.tokenizer.KTokenizer", "save"),
    ),
    Bad(
        "full-disk-data-random",
        lambda e: ["data", "random", "--m", 8, "--s", 4, "--v", 16, "--out", e.tmp / "a" / "ds"],
        "{tmp}/a/ds",
        r": No space left on device$",
        fault=_full_disk_on("numpy.savez"),
    ),
    Bad(
        "full-disk-export",
        lambda e: ["export", e.run, "--hf", e.tmp / "hf"],
        "{tmp}/hf",
        r": No space left on device$",
        fault=_export_runs_out_of_space,
    ),
    Bad(
        "full-disk-report",
        lambda e: ["report", "--db", e.db(), "--out", e.tmp / "report"],
        "{tmp}/report",
        r": No space left on device$",
        fault=_full_disk_on("matplotlib.figure.Figure", "savefig"),
    ),
    Bad(
        "full-disk-csv",
        lambda e: ["runs", "--db", e.db(), "--csv", e.tmp / "runs.csv"],
        "{tmp}/runs.csv",
        r": No space left on device$",
        fault=_write_text_fails(errno.ENOSPC),
    ),
    Bad(
        "full-disk-quantize",
        lambda e: ["quantize", e.run, "--bits", 8, "--method", "rtn", "--db", e.tmp / "k.db"],
        "quantized",
        r": No space left on device$",
        fault=_write_text_fails(errno.ENOSPC),
    ),
    Bad(
        "full-disk-train",
        lambda e: ["train", e.cfg(), "--out", e.tmp / "run", "--db", e.tmp / "k.db"],
        "{tmp}/run",
        r": No space left on device$",
        fault=_write_text_fails(errno.ENOSPC),
    ),
    # --- grids that expand to zero runs
    Bad(
        "zero-runs-all-blocks-skipped",
        lambda e: ["sweep", e.grid(blocks=[{"needs": ["dataset.teleport"]}]), "--dry-run"],
        "grid.blocks",
        r"expands to zero runs: every block was skipped: .*dataset\.teleport",
    ),
    Bad(
        "zero-runs-no-blocks",
        lambda e: ["sweep", e.grid(blocks=[]), "--dry-run"],
        "grid.blocks",
        r"expands to zero runs: its block list is empty",
    ),
    Bad(
        "zero-runs-empty-block-file",
        lambda e: ["sweep", e.grid(blocks=["@more.yaml"]), "--dry-run", "--json"],
        "grid.blocks",
        r"expands to zero runs",
        files={"more.yaml": "[]\n"},
    ),
    Bad(
        "zero-runs-empty-axis",
        lambda e: ["sweep", e.grid(product={"training.lr": []}), "--db", e.tmp / "k.db"],
        "grid.product.training.lr",
        r"must be a non-empty list",
    ),
    Bad(
        "zero-runs-quantize-grid",
        lambda e: ["quantize", "--grid", e.grid(blocks=[]), "--out", e.tmp, "--bits", 8],
        "grid.blocks",
        r"expands to zero runs",
    ),
    # --- --set on a missing key
    Bad(
        "set-missing-key",
        lambda e: ["train", e.cfg(), "--out", e.tmp / "run", "--set", "training.exposure=3"],
        "--set",
        r"training\.exposure: unknown key 'exposure' in training; did you mean 'exposures'\?",
    ),
    Bad(
        "set-missing-section",
        lambda e: ["train", e.cfg(), "--out", e.tmp / "run", "--set", "trainng.lr=0.1"],
        "--set",
        r"unknown key 'trainng'; did you mean 'training'\? \(allowed: dataset, measurement",
    ),
    Bad(
        "set-below-a-value",
        lambda e: ["train", e.cfg(), "--out", e.tmp / "run", "--set", "training.lr.max=1"],
        "--set",
        r"training\.lr is not a config section",
    ),
    Bad(
        "set-missing-override",
        lambda e: ["sweep", e.grid(), "--dry-run", "--set", "model.overrides.d_modle=32"],
        "--set",
        r"did you mean 'd_model'\?",
    ),
    Bad(
        "only-unknown-key",
        lambda e: ["sweep", e.grid(), "--dry-run", "--only", "training.lrr=1e-3"],
        "--only",
        r"'training\.lrr' is not a run config key",
    ),
    Bad(
        "set-demo",
        lambda e: ["demo", "--out", e.tmp / "demo", "--db", e.tmp / "k.db", "--set",
                   "training.exposure=1"],
        "--set",
        r"did you mean 'exposures'\?",
    ),
    Bad(
        "set-no-equals",
        lambda e: ["train", e.cfg(), "--out", e.tmp / "run", "--set", "training.lr"],
        "--set",
        r"expected key=value, got 'training\.lr'",
    ),
    # --- a Hugging Face checkpoint whose tokenizer is not the dataset's
    Bad(
        "hf-tokenizer-mismatch",
        lambda e: ["measure", "--hf", e.hf["other-tokenizer"], "--dataset", e.bios],
        "--hf",
        r"tokenizer\.json does not match the tokenizer of the dataset .*: \d+ of its 600 tokens",
        needs_hf=True,
    ),
    Bad(
        "hf-tokenizer-unreadable",
        lambda e: ["measure", "--hf", e.hf["broken-tokenizer"], "--dataset", e.bios],
        "--hf",
        r"tokenizer\.json is not a readable tokenizer",
        needs_hf=True,
    ),
]  # fmt: skip


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory, bios_dir) -> Path:
    """A run directory with a checkpoint of an untrained model (no training needed here)."""
    from kcap.training.config import parse_config
    from kcap.training.trainer import Trainer

    out = tmp_path_factory.mktemp("bad-inputs") / "run"
    cfg = parse_config(
        {
            "dataset": {"path": str(bios_dir)},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
            "training": {"exposures": 1, "batch_size": 2, "window": 64, "threads": 1},
            "measurement": {"batch_size": 40},
        }
    )
    Trainer(cfg, out, progress=False).save_checkpoint()
    return out


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory, bios_dir, biod_dir) -> dict[str, Path]:
    """Tiny GPT-NeoX checkpoints: with bioD's tokenizer (600 rows, as bioS needs), with a
    tokenizer.json that is not a tokenizer, and one with too few rows (300) and no tokenizer."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("bad-hf")
    size = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    out = {}
    for name, vocab in (("other-tokenizer", 600), ("broken-tokenizer", 600), ("small-vocab", 300)):
        model = transformers.GPTNeoXForCausalLM(
            transformers.GPTNeoXConfig(vocab_size=vocab, **size)
        )
        model.save_pretrained(root / name)
        out[name] = root / name
    shutil.copyfile(biod_dir / "tokenizer.json", out["other-tokenizer"] / "tokenizer.json")
    (out["broken-tokenizer"] / "tokenizer.json").write_text("{not json")
    return out


@pytest.fixture
def env(request, tmp_path, bios_dir, biod_dir, shared_run) -> Env:
    case: Bad = request.node.callspec.params["case"]
    hf = request.getfixturevalue("hf_checkpoints") if case.needs_hf else {}
    work = tmp_path / "case"
    work.mkdir()
    return Env(work, bios_dir, biod_dir, shared_run, hf)


# ------------------------------------------------------------------------------ the test


def _param(case: Bad):
    return pytest.param(case, id=case.id)


def test_the_corpus_covers_every_kind_of_bad_input():
    kinds = {case.id.split("-")[0] for case in CASES}
    assert kinds >= {
        "yaml", "unknown", "range", "heads", "vocab", "run", "checkpoint", "store",
        "unwritable", "full", "zero", "set", "hf",
    }  # fmt: skip
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Bad, env: Env, monkeypatch):
    monkeypatch.chdir(env.tmp)  # default outputs (kcap.db, report/, kcap-sweep/) land here
    for name, text in (case.files or {}).items():
        env.text(name, text)
    argv = [str(a) for a in case.argv(env)]
    roots = [env.tmp, *env.shared]
    before = _snapshot(roots)
    if case.fault is not None:
        case.fault(env, monkeypatch)
    result = CliRunner().invoke(app, argv)
    monkeypatch.undo()
    output, code, exc = result.output, result.exit_code, result.exception
    crashed = None
    if exc is not None and not isinstance(exc, SystemExit):
        crashed = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    del result, exc
    after = _snapshot(roots)
    if after != before:
        # The exception's frames may still hold what the command had open (a store's SQLite
        # connection, with its -wal and -shm files): let them go, as the end of the process
        # does, and look again.
        gc.collect()
        after = _snapshot(roots)

    assert crashed is None, f"{crashed}\n{output}"
    assert "Traceback" not in output
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    line = lines[0]
    assert line.startswith("Error: "), line
    assert case.field.format(tmp=env.tmp) in line, line
    assert re.search(case.match, line), line
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"written: {changed}"
