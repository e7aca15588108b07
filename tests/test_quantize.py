"""Weight-only quantization: weights on their grid, RTN error grows as bits fall, GPTQ beats RTN
on a layer's calibration inputs, and `kcap quantize` records a measured run once."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from kcap.cli.main import app
from kcap.experiments.analysis import load_points
from kcap.experiments.store import ResultsStore, config_hash
from kcap.models import GPT, preset
from kcap.models.quantize import (
    block_linears,
    gptq_quantize,
    grid_codes,
    quantize_model,
    rtn_quantize,
)

VOCAB, T = 64, 32


def _model(name: str = "gpt2-2-1", seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(preset(name, VOCAB, d_model=16, context=T)).eval()


def _calib(seed: int = 1, batches: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (4, T), generator=g) for _ in range(batches)]


def _assert_on_grid(w: torch.Tensor, lq, bits: int) -> None:
    """Integer codes in [0, 2^bits - 1], hence at most 2^bits values per channel or group."""
    codes = grid_codes(w.detach(), lq)
    assert (codes - codes.round()).abs().max() < 1e-3
    assert codes.round().min() >= 0 and codes.round().max() <= 2**bits - 1
    size = lq.group_size or w.size(-1)
    for start in range(0, w.size(-1), size):
        for row in w.detach().reshape(-1, w.size(-1))[:, start : start + size]:
            assert row.unique().numel() <= 2**bits


@pytest.mark.parametrize(
    ("name", "method", "bits", "group_size", "act_order"),
    [
        ("gpt2-2-1", "rtn", 4, None, False),
        ("gpt2-2-1", "rtn", 3, 8, False),
        ("gpt2-2-1", "gptq", 4, None, False),
        ("gpt2-2-1", "gptq", 3, 8, False),
        ("gpt2-2-1", "gptq", 2, 8, True),
        ("llama-2-1", "gptq", 3, None, True),
    ],
)
def test_weights_on_grid_embeddings_head_norms_untouched(name, method, bits, group_size, act_order):
    model = _model(name)
    before = copy.deepcopy(model.state_dict())
    record: dict = {}
    quantize_model(
        model,
        bits,
        method=method,
        group_size=group_size,
        calib=_calib(),
        act_order=act_order,
        record=record,
    )
    linears = {f"blocks.{i}.{n}" for i, b in enumerate(model.blocks) for n, _ in block_linears(b)}
    assert set(record) == linears
    assert len(linears) == (8 if name == "gpt2-2-1" else 10)  # qkv, proj, MLP (gated: 3)
    for layer, lq in record.items():
        w = model.get_parameter(f"{layer}.weight")
        _assert_on_grid(w, lq, bits)
        assert not torch.equal(w, before[f"{layer}.weight"])
    quantized = {f"{layer}.weight" for layer in record}
    for key, value in model.state_dict().items():  # embedding, head, norms, biases
        if key not in quantized:
            assert torch.equal(value, before[key]), key


def test_moe_experts_rtn_router_full_precision():
    model = _model("gpt2-1-1-moe4")
    router = model.blocks[0].mlp.router.weight.clone()
    record: dict = {}
    quantize_model(model, 3, method="gptq", calib=_calib(), record=record)
    for name in ("w_in", "w_out"):
        w = model.get_parameter(f"blocks.0.mlp.{name}").transpose(-1, -2)  # (E, out, in)
        _assert_on_grid(w, record[f"blocks.0.mlp.{name}"], 3)
    assert torch.equal(model.blocks[0].mlp.router.weight, router)
    assert torch.isfinite(model(_calib()[0])).all()


def test_rtn_logit_change_small_at_int8_and_grows_as_bits_fall():
    model = _model()
    x = torch.cat(_calib())
    with torch.no_grad():
        ref = model(x)
        spread = (ref - ref.mean(-1, keepdim=True)).norm()
        change = {}
        for bits in (8, 4, 3, 2):
            q = quantize_model(copy.deepcopy(model), bits, method="rtn")
            change[bits] = float((q(x) - ref).norm() / spread)
    assert change[8] < 0.01, change
    assert change[8] < change[4] < change[3] < change[2], change


def _layer_inputs(model: GPT, layer: torch.nn.Linear, calib) -> torch.Tensor:
    seen = []
    handle = layer.register_forward_hook(
        lambda m, a, o: seen.append(a[0].reshape(-1, a[0].size(-1)))
    )
    with torch.no_grad():
        for x in calib:
            model(x)
    handle.remove()
    return torch.cat(seen)


@pytest.mark.parametrize("bits", [4, 3])
@pytest.mark.parametrize(
    ("layer_name", "group_size"), [("attn.qkv", None), ("mlp.proj", None), ("mlp.proj", 16)]
)
def test_gptq_reconstruction_error_at_most_rtn(bits, layer_name, group_size):
    model = _model()
    layer = model.blocks[1].get_submodule(layer_name)
    X = _layer_inputs(model, layer, _calib(batches=8))  # 1024 tokens > 64 inputs
    H = 2 * X.T @ X / X.size(0)
    W = layer.weight.detach()

    def err(q: torch.Tensor) -> float:
        return float(((W - q) @ X.T).norm())

    gptq = err(gptq_quantize(W, H, bits, group_size=group_size).weight)
    rtn = err(rtn_quantize(W, bits, group_size).weight)
    assert gptq < 0.95 * rtn, (gptq, rtn)  # strictly better: a no-op GPTQ fails too


# ------------------------------------------------------------------------------ the CLI

runner = CliRunner()
TINY = {
    "name": "tinyq",
    "dataset": {
        "kind": "biod",
        "n": 20,
        "seed": 1,
        "vocab": 400,
        "k": 3,
        "c": 2,
        "d": 16,
        "l": 2,
        "t": 10,
    },
    "model": {"preset": "gpt2-2-1", "overrides": {"d_model": 16}},
    "training": {
        "exposures": 100,
        "batch_size": 4,
        "window": 64,
        "lr": 0.02,
        "threads": 1,
        "log_every": 50,
    },
    "measurement": {"batch_size": 20},
}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny bioD run (about 500 of its 1,066 bits stored) recorded in its own store."""
    root = tmp_path_factory.mktemp("quant")
    cfg = root / "tiny.yaml"
    cfg.write_text(json.dumps(TINY))
    r = run("train", cfg, "--out", root / "run", "--db", root / "k.db")
    assert r.exit_code == 0, r.output
    return root / "run", root / "k.db"


def _rows(db) -> list:
    with ResultsStore(db) as store:
        return store.list_runs()


def test_cli_records_quantized_runs_once(trained):
    run_dir, db = trained
    (fp,) = [rec for rec in _rows(db) if "quantize" not in rec.config]
    fp_bits = fp.metrics["bits"]["total"]
    assert fp_bits > 200  # the test means something: the run stores bits
    got = {}
    for bits, method in ((3, "rtn"), (3, "gptq"), (2, "gptq")):
        r = run("quantize", run_dir, "--bits", bits, "--method", method, "--calib-windows", 16,
                "--db", db, "--json")  # fmt: skip
        assert r.exit_code == 0, r.output
        got[(bits, method)] = m = json.loads(r.output)
        assert m["P"] == fp.metrics["P"] == fp.params["P"]  # the same P
        assert m["bits"]["total"] <= fp_bits + 0.01 * m["data_bits"]
        assert m["p1"] + m["p2"] >= fp.metrics["p1"] + fp.metrics["p2"] - 0.05
        assert m["quantize"]["reference"]["bits"] == pytest.approx(fp_bits)
    assert got[(3, "gptq")]["bits"]["total"] >= got[(3, "rtn")]["bits"]["total"] - 5
    rows = {rec.name: rec for rec in _rows(db)}
    assert set(rows) == {"tinyq", "tinyq-int3-rtn", "tinyq-int3-gptq", "tinyq-int2-gptq"}
    for name, rec in rows.items():
        if name == "tinyq":
            continue
        q = rec.config.pop("quantize")
        assert rec.config == fp.config  # the run's config plus the quantize entry
        assert rec.run_id == config_hash({**rec.config, "quantize": q})
        assert q["bits"] == int(name[len("tinyq-int")]) and q["method"] == name.split("-")[-1]
        assert rec.status == "finished" and rec.params == fp.params
        assert (run_dir / "quantized" / f"int{q['bits']}-{q['method']}-{rec.run_id}").is_dir()
    points = {p.name: p for p in load_points(db)}
    assert points["tinyq"].quant is None
    assert points["tinyq-int2-gptq"].quant == 2 and points["tinyq-int3-rtn"].quant == 3
    assert not points["tinyq-int2-gptq"].history  # the training curve belongs to the fp run
    again = run("quantize", run_dir, "--bits", 2, "--calib-windows", 16, "--db", db)
    assert again.exit_code == 0 and "already recorded" in again.output, again.output
    assert len(_rows(db)) == 4


def test_cli_grid_quantizes_finished_runs(trained, tmp_path):
    from kcap.experiments.grid import expand, load_grid

    run_dir, _ = trained
    grid = tmp_path / "grid.yaml"
    base = {k: v for k, v in TINY.items() if k != "name"}
    grid.write_text(json.dumps({"name": "g", "base": base, "product": {"training.seed": [0, 1]}}))
    first, _ = expand(load_grid(grid))
    shutil.copytree(run_dir, tmp_path / "sw" / "runs" / first.run_id)  # only one has finished
    args = ["quantize", "--grid", grid, "--out", tmp_path / "sw", "--db", tmp_path / "g.db"]
    r = run(*args, "--bits", 4, "--method", "rtn")
    assert r.exit_code == 0, r.output
    assert "1 quantized, 0 skipped, 1 not finished, 0 failed" in r.output
    (rec,) = _rows(tmp_path / "g.db")
    assert rec.config["quantize"]["bits"] == 4 and rec.name == "tinyq-int4-rtn"
    r = run(*args, "--bits", 4, "--method", "rtn", "--json")
    assert [row["state"] for row in json.loads(r.output)] == ["skipped", "not finished"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["RUN", "--bits", 5], "--bits"),
        (["RUN", "--bits", 4, "--method", "awq"], "--method"),
        (["RUN", "--bits", 4, "--group-size", 1], "--group-size"),
        (["RUN", "--bits", 4, "--calib-windows", 0], "--calib-windows"),
        (["MISSING", "--bits", 4], "RUN_DIR"),
        (["RUN", "--bits", 4, "--grid", "g.yaml"], "RUN_DIR"),
        (["--bits", 4, "--grid", "g.yaml"], "--out"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(trained, tmp_path, args, field):
    run_dir, _ = trained
    where = {"RUN": run_dir, "MISSING": tmp_path / "missing"}
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    r = run("quantize", *[where.get(a, a) for a in args], "--db", tmp_path / "k.db")
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.output, r.output
    assert not (tmp_path / "k.db").exists()
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


def test_gptq_lazy_block_updates_equal_one_block():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(24, 40, generator=g) * 0.02
    X = torch.randn(500, 40, generator=g) @ torch.randn(40, 40, generator=g)
    H = 2 * X.T @ X / X.size(0)
    for act_order in (False, True):
        whole = gptq_quantize(W, H, 3, act_order=act_order, block_size=40).weight
        lazy = gptq_quantize(W, H, 3, act_order=act_order, block_size=8).weight
        assert torch.allclose(whole, lazy, atol=1e-6)


def test_gptq_is_sequential_each_layer_sees_quantized_inputs():
    """Layer by layer, GPTQ of the inputs that the already quantized layers produce."""
    model, calib = _model(), _calib()
    out = quantize_model(copy.deepcopy(model), 3, calib=calib)
    ref = copy.deepcopy(model)
    for i, block in enumerate(ref.blocks):
        for name, layer in block_linears(block):
            X = _layer_inputs(ref, layer, calib)
            q = gptq_quantize(layer.weight, 2 * X.T @ X / X.size(0), 3).weight
            assert torch.allclose(out.get_parameter(f"blocks.{i}.{name}.weight"), q, atol=1e-6)
            if (i, name) == (1, "attn.qkv"):  # inputs from the unquantized model differ
                X0 = _layer_inputs(model, model.blocks[1].attn.qkv, calib)
                q0 = gptq_quantize(layer.weight, 2 * X0.T @ X0 / X0.size(0), 3).weight
                assert not torch.allclose(q0, q, atol=1e-6)
            layer.weight.data.copy_(q)
