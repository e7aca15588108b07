"""The public Python API (`kcap.api`, re-exported by `kcap`): every public name imports, datasets
are made and loaded, the tokenizer and the stream are the trainer's own, and `kcap.measure` gives
the CLI's `Measurement` for a kcap GPT, a transformers model and a plain function."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import kcap
from kcap.cli.main import app
from kcap.data.bios import bios_bits
from kcap.tokenization.factory import make_stream
from kcap.tokenization.stream import PAD
from kcap.training.config import parse_config
from kcap.training.trainer import Trainer, load_run

runner = CliRunner()


def test_every_public_name_imports_and_is_documented():
    namespace: dict = {}
    exec("from kcap import *", namespace)
    for name in kcap.__all__:
        value = getattr(kcap, name)
        assert namespace[name] is value
        if callable(value):
            assert value.__doc__ and value.__doc__.strip(), name
    assert kcap.Dataset.__module__ == "kcap.data.dataset"
    assert kcap.KnowledgeStream.__module__ == "kcap.integrations.pytorch"
    with pytest.raises(AttributeError):
        _ = kcap.no_such_name


def test_import_is_cheap_and_measure_keeps_its_name():
    code = (
        "import sys, kcap; heavy = [m for m in ('torch', 'transformers', 'numpy') "
        "if m in sys.modules]; print(heavy)\n"
        "from kcap.measure.knowledge import measure_knowledge\n"
        "from kcap.measure import losses, spans\n"
        "print(kcap.measure is kcap.api.measure)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


def test_make_dataset_writes_and_load_dataset_reads(tmp_path):
    data = kcap.make_dataset("bios", tmp_path / "ds", n=20, seed=1, vocab=600)
    assert data.kind == "bios" and data.n == 20
    assert data.bits == pytest.approx(bios_bits(20))
    again = kcap.load_dataset(tmp_path / "ds")
    assert again.manifest == data.manifest
    assert np.array_equal(again.population.name, data.population.name)
    with pytest.raises(kcap.KcapError, match=r"^out: .*not empty"):
        kcap.make_dataset("bios", tmp_path / "ds", n=20, vocab=600)
    other = kcap.make_dataset("bios", tmp_path / "ds", n=21, vocab=600, force=True)
    assert other.n == 21
    with pytest.raises(kcap.KcapError, match=r"^dataset.n:"):
        kcap.make_dataset("bios", tmp_path / "bad", n=0)
    with pytest.raises(kcap.KcapError, match=r"^dataset.kind:"):
        kcap.make_dataset("nope", tmp_path / "bad", n=10)
    assert not (tmp_path / "bad").exists()


def test_hf_tokenizer_gives_the_dataset_ids(bios_ds):
    tok = kcap.hf_tokenizer(bios_ds)
    assert len(tok) == bios_ds.tokenizer.vocab_size
    assert tok.eos_token_id == tok.pad_token_id == bios_ds.tokenizer.eos_id
    doc = next(bios_ds.source().documents(0, np.arange(1)))
    assert tok(doc.text).input_ids == bios_ds.tokenizer.encode(doc.text)[0]
    tok.backend_tokenizer.enable_truncation(4)  # a copy: the dataset's tokenizer is untouched
    assert bios_ds.tokenizer.hf.truncation is None


def _batches(stream, batch_size, workers=0):
    loader = torch.utils.data.DataLoader(stream, batch_size=batch_size, num_workers=workers)
    return [b["labels"] for b in loader]


def test_stream_is_the_trainers_stream_with_exact_exposures(bios_ds):
    stream = kcap.training_stream(bios_ds, exposures=3, seed=7, window=64)
    raw = [w.ids for w in make_stream(bios_ds, exposures=3, seed=7, window=64)]
    items = list(stream)
    assert len(items) == len(raw) == len(stream)
    eos = bios_ds.tokenizer.eos_id
    for item, ids in zip(items, raw, strict=True):
        pad = ids == PAD
        assert np.array_equal(item["labels"].numpy(), np.where(pad, -100, ids))
        assert np.array_equal(item["input_ids"].numpy(), np.where(pad, eos, ids))
    # every token after the first is predicted once: N x E documents, each ending in eos
    predicted = torch.cat([item["labels"][1:] for item in items])
    predicted = predicted[predicted != -100]
    assert int((predicted == eos).sum()) == bios_ds.n * 3
    assert len(predicted) == stream.stream().count_tokens() - 1


def test_stream_workers_yield_each_window_once_in_order(bios_ds):
    one = _batches(kcap.training_stream(bios_ds, exposures=2, window=32, batch_size=3), 3)
    two = _batches(kcap.training_stream(bios_ds, exposures=2, window=32, batch_size=3), 3, 2)
    assert len(one) == len(two) > 4
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    # a block size other than the loader's batch: the same windows, each once, in another order
    mixed = _batches(kcap.training_stream(bios_ds, exposures=2, window=32), 3, 2)
    rows = sorted(tuple(r.tolist()) for b in mixed for r in b)
    assert rows == sorted(tuple(r.tolist()) for b in one for r in b)


def test_stream_resumes_from_a_step(bios_ds):
    full = _batches(kcap.training_stream(bios_ds, exposures=2, window=32, batch_size=2), 2)
    resumed = kcap.training_stream(bios_ds, exposures=2, window=32, batch_size=2, start_step=5)
    assert len(resumed) == len(kcap.training_stream(bios_ds, exposures=2, window=32)) - 10
    rest = _batches(resumed, 2, workers=2)
    assert all(torch.equal(a, b) for a, b in zip(rest, full[5:], strict=True))
    assert len(rest) == len(full) - 5


def _tiny_run(tmp_path, dataset_dir) -> tuple:
    cfg = parse_config(
        {
            "dataset": {"path": str(dataset_dir)},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
            "training": {"exposures": 2, "batch_size": 2, "window": 64, "lr": 3e-3, "threads": 1},
            "measurement": {"batch_size": 16},
        }
    )
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    return load_run(tmp_path / "run")


def _figures(d: dict) -> dict:
    keys = ("p1", "p2", "bits_unclipped", "loss_per_attribute", "recall_per_attribute", "P", "R")
    return {k: d[k] for k in keys}


def _close(a, b, rel: float, abs_: float) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel, abs_) for k in a)
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def test_measure_equals_the_cli_for_gpt_transformers_and_functions(tmp_path, bios_dir):
    cfg, data, gpt, params = _tiny_run(tmp_path, bios_dir)
    cli = runner.invoke(app, ["measure", str(tmp_path / "run"), "--json"])
    assert cli.exit_code == 0, cli.output
    from_cli = json.loads(cli.stdout)
    ours = kcap.measure(gpt, data, batch_size=cfg.measurement.batch_size)
    assert isinstance(ours, kcap.Measurement)
    assert ours.to_dict() == from_cli  # the very figures `kcap measure RUN` gives
    assert ours.params == params and ours.P == kcap.parameter_counts(gpt, data).P

    from kcap.models.hf import export_hf

    export_hf(gpt, tmp_path / "hf", data.path / "tokenizer.json")
    cli = runner.invoke(
        app, ["measure", "--hf", str(tmp_path / "hf"), "--dataset", str(bios_dir), "--json"]
    )
    assert cli.exit_code == 0, cli.output
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True)
    hf.train()
    via_hf = kcap.measure(hf, data)
    assert hf.training  # left in the mode it was in
    assert via_hf.to_dict() == json.loads(cli.stdout)
    assert via_hf.P == ours.P  # the SPEC §4 count of the same weights
    assert _close(_figures(via_hf.to_dict()), _figures(ours.to_dict()), 1e-4, 1e-3)

    gpt.eval()
    calls = []

    def fn(ids: torch.Tensor) -> torch.Tensor:
        calls.append(ids.shape)
        return gpt(ids)

    via_fn = kcap.measure(fn, data, P=ours.P, batch_size=cfg.measurement.batch_size)
    assert calls and not gpt.training
    assert _figures(via_fn.to_dict()) == _figures(ours.to_dict())
    assert via_fn.params == {"P": ours.P}
    with pytest.raises(kcap.KcapError, match=r"^P: "):
        kcap.measure(fn, data)
    with pytest.raises(kcap.KcapError, match=r"^model: .*logits"):
        kcap.measure(lambda ids: ids.float(), data, P=10)
    with pytest.raises(kcap.KcapError, match=r"^model: .*do not cover"):
        kcap.measure(lambda ids: gpt(ids)[..., :10], data, P=10)


def test_measure_random_strings(random_dir):
    from kcap.models import GPT, preset

    data = kcap.load_dataset(random_dir)
    torch.manual_seed(0)
    model = GPT(preset("gpt2-1-1", data.tokenizer.vocab_size, d_model=16, context=16))
    m = kcap.measure(model, data)
    assert m.kind == "random" and m.n_people == data.n
    assert m.P == kcap.parameter_counts(model, data).P
