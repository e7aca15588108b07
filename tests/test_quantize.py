"""Weight-only quantization: weights on their grid, RTN error grows as bits fall, GPTQ beats RTN
on a layer's calibration inputs and on a whole model, the grid and GPTQ equal auto_gptq's (the
paper's quantizer) on its default settings, and `kcap quantize` records a measured run once,
with the settings it used."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kcap.cli.main import app
from kcap.experiments.analysis import load_points
from kcap.experiments.store import ResultsStore
from kcap.models import GPT, preset
from kcap.models.quantize import (
    block_linears,
    gptq_quantize,
    grid_codes,
    grid_params,
    quant_label,
    quant_label_of,
    quantize_model,
    rtn_quantize,
)
from kcap.training.config import config_hash

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
    """Under GPTQ the experts are rounded to nearest (and the run is labelled so: see
    test_quantized_moe_run_is_labelled_rtn_experts); the router stays in full precision."""
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


def _find_params_reference(x: torch.Tensor, bits: int, sym: bool):
    """auto_gptq's ``Quantizer.find_params(x, weight=True)`` per channel, written out."""
    maxq = 2**bits - 1
    xmin = torch.minimum(x.min(1)[0], torch.zeros(x.size(0)))
    xmax = torch.maximum(x.max(1)[0], torch.zeros(x.size(0)))
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin[xmin < 0] = -xmax[xmin < 0]
    flat = (xmin == 0) & (xmax == 0)
    xmin[flat], xmax[flat] = -1.0, 1.0
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale.unsqueeze(1), zero.unsqueeze(1)


def _fasterquant_reference(W, H, bits, *, sym, actorder, blocksize=128, percdamp=0.01):
    """auto_gptq's ``GPTQ.fasterquant`` per channel (``group_size=-1``), written out."""
    W, H = W.clone().float(), H.clone()
    scale, zero = _find_params_reference(W, bits, sym)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    diag = torch.arange(H.size(0))
    H[diag, diag] += percdamp * torch.mean(torch.diag(H))
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, W.size(1), blocksize):
        i2 = min(i1 + blocksize, W.size(1))
        W1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros(W.size(0), i2 - i1), Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i].unsqueeze(1)
            q = (scale * (torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1) - zero))[:, 0]
            Q[:, i1 + i] = q
            Err1[:, i] = (W1[:, i] - q) / Hinv1[i, i]
            W1[:, i:] -= Err1[:, i].unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q[:, torch.argsort(perm)] if actorder else Q


@pytest.mark.parametrize("sym", [True, False])
def test_grid_is_auto_gptq_find_params(sym):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 20, generator=g)
    w[1] = w[1].abs()  # no negative weight: the symmetric grid keeps [0, max] (as auto_gptq)
    w[2] = 0.0  # all zero: [-1, 1]
    for bits in (8, 4, 3):
        scale, zero = grid_params(w, bits, sym)
        ref_scale, ref_zero = _find_params_reference(w, bits, sym)
        assert torch.equal(scale, ref_scale) and torch.equal(zero, ref_zero)


@pytest.mark.parametrize(("sym", "act_order"), [(True, True), (True, False), (False, False)])
def test_gptq_equals_auto_gptq_fasterquant_per_channel(sym, act_order):
    """On auto_gptq's defaults (symmetric, desc_act, per channel: the paper's settings) and off
    them; with an input never seen (a dead column, zeroed as auto_gptq does)."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(24, 40, generator=g) * 0.02
    X = torch.randn(600, 40, generator=g) @ torch.randn(40, 40, generator=g)
    X[:, 7] = 0.0
    H = 2 * X.T @ X / X.size(0)
    ours = gptq_quantize(W, H, 3, sym=sym, act_order=act_order, block_size=16).weight
    ref = _fasterquant_reference(W, H, 3, sym=sym, actorder=act_order, blocksize=16)
    assert torch.equal(ours, ref)
    assert (ours[:, 7] == 0).all()


def test_gptq_beats_rtn_on_a_whole_model():
    """The model's logits on inputs that GPTQ did not calibrate on move less than under RTN."""
    model = _model()
    held_out = torch.cat(_calib(seed=9))
    with torch.no_grad():
        ref = model(held_out)
        change = {
            method: float(
                (quantize_model(copy.deepcopy(model), 3, method=method, calib=_calib())(held_out)
                 - ref).norm()
            )
            for method in ("gptq", "rtn")
        }  # fmt: skip
    assert change["gptq"] < 0.8 * change["rtn"], change


def test_labels_name_what_differs_from_the_paper():
    assert quant_label(4, "gptq") == "int4-gptq"  # symmetric, act-order, per channel
    assert quant_label(8, "rtn", sym=False) == "int8-rtn-asym"
    assert quant_label(4, "gptq", 128, act_order=False) == "int4-gptq-g128-noact"
    assert quant_label(4, "gptq", experts="rtn") == "int4-gptq-rtn-experts"
    # entries recorded before the grid was a choice were asymmetric
    legacy = {"bits": 4, "method": "gptq", "group_size": None, "act_order": False}
    assert quant_label_of(legacy) == "int4-gptq-asym-noact"
    assert quant_label_of({**legacy, "sym": True, "act_order": True}) == "int4-gptq"


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
    for bits, method, *grid in ((3, "rtn"), (3, "gptq"), (2, "gptq"), (2, "rtn"),
                                (3, "gptq", "--asym", "--no-act-order")):  # fmt: skip
        r = run(
            "quantize", run_dir, "--bits", bits, "--method", method, *grid, "--db", db, "--json"
        )
        assert r.exit_code == 0, r.output
        got[(bits, method, *grid)] = m = json.loads(r.output)
        assert m["P"] == fp.metrics["P"] == fp.params["P"]  # the same P
        assert m["bits"]["total"] <= fp_bits + 0.01 * m["data_bits"]
        assert m["p1"] + m["p2"] >= fp.metrics["p1"] + fp.metrics["p2"] - 0.05
        assert m["quantize"]["reference"]["bits"] == pytest.approx(fp_bits)
        gptq = method == "gptq"
        assert m["quantize"]["calib_people_used"] == (20 if gptq else 0)  # all 20 people < 1000
    # on the whole model, GPTQ keeps more of the knowledge than RTN on the same (paper's) grid
    stored = {k: m["bits"]["total"] for k, m in got.items()}
    assert stored[(3, "gptq")] > stored[(3, "rtn")] and stored[(2, "gptq")] > stored[(2, "rtn")]
    rows = {rec.name: rec for rec in _rows(db)}
    names = {"tinyq-int3-rtn", "tinyq-int3-gptq", "tinyq-int2-gptq", "tinyq-int2-rtn"}
    assert set(rows) == {"tinyq", "tinyq-int3-gptq-asym-noact", *names}
    for name, rec in rows.items():
        if name == "tinyq":
            continue
        q = rec.config.pop("quantize")
        assert rec.config == fp.config  # the run's config plus the quantize entry
        assert rec.run_id == config_hash({**rec.config, "quantize": q})
        assert name == f"tinyq-{quant_label_of(q)}" == f"tinyq-{rec.metrics['quantize']['label']}"
        paper_grid = "asym" not in name  # the default: symmetric, act-order (GPTQ only)
        assert q["sym"] is paper_grid and q["act_order"] is (paper_grid and q["method"] == "gptq")
        assert q["calib_people"] == (1000 if q["method"] == "gptq" else 0)
        assert rec.status == "finished" and rec.params == fp.params
        assert (run_dir / "quantized" / f"{quant_label_of(q)}-{rec.run_id}").is_dir()
    points = {p.name: p for p in load_points(db)}
    assert points["tinyq"].quant is None and points["tinyq"].quantizer == ""
    assert points["tinyq-int2-gptq"].quant == 2 and points["tinyq-int3-rtn"].quant == 3
    assert points["tinyq-int3-gptq-asym-noact"].quantizer == "int3-gptq-asym-noact"
    assert not points["tinyq-int2-gptq"].history  # the training curve belongs to the fp run
    again = run("quantize", run_dir, "--bits", 2, "--db", db)
    assert again.exit_code == 0 and "already recorded" in again.output, again.output
    assert len(_rows(db)) == 6


def test_cli_grid_quantizes_finished_runs(tmp_path):
    from kcap.experiments.grid import expand, load_grid

    grid, sw, db = tmp_path / "grid.yaml", tmp_path / "sw", tmp_path / "g.db"
    base = {k: v for k, v in TINY.items() if k != "name"}
    grid.write_text(json.dumps({"name": "g", "base": base, "product": {"training.seed": [0, 1]}}))
    first, _ = expand(load_grid(grid))
    # only the first point has finished
    r = run("sweep", grid, "--out", sw, "--db", db, "--only", "training.seed=0")
    assert r.exit_code == 0, r.output
    args = ["quantize", "--grid", grid, "--out", sw, "--db", db]
    r = run(*args, "--bits", 4, "--method", "rtn")
    assert r.exit_code == 0, r.output
    assert "1 quantized, 0 skipped, 1 not finished, 0 failed" in r.output
    (rec,) = [x for x in _rows(db) if x.config.get("quantize")]
    assert rec.config["quantize"]["bits"] == 4 and rec.name == f"{first.name}-int4-rtn"
    r = run(*args, "--bits", 4, "--method", "rtn", "--json")
    assert [row["state"] for row in json.loads(r.output)] == ["skipped", "not finished"]
    # the run folders are gone (a store rebuilt on a new machine): the store still answers
    shutil.rmtree(sw / "runs" / first.run_id)
    r = run(*args, "--bits", 4, "--method", "rtn", "--json")
    rows = json.loads(r.output)
    assert [row["state"] for row in rows] == ["skipped", "not finished"]
    assert rows[0]["run_id"] == rec.run_id and rows[0]["metrics"] == rec.metrics
    r = run(*args, "--bits", 8, "--method", "rtn", "--json")  # another quantization: not recorded
    assert [row["state"] for row in json.loads(r.output)] == ["not finished", "not finished"]
    # records rebuilt from CSV rows (benchmarks/rebuild_store.py) keep the headline figures only:
    # the reference is then the source run's record
    brief = {k: rec.metrics[k] for k in ("P", "R", "bits", "data_bits", "recall_accuracy")}
    with ResultsStore(db) as store:
        store.finish_run(rec.run_id, metrics=brief)
        store.finish_run(first.run_id, metrics={**brief, "R": 0.25, "bits": {"total": 123.0}})
    r = run(*args, "--bits", 4, "--method", "rtn", "--json")
    rows = json.loads(r.output)
    assert [row["state"] for row in rows] == ["skipped", "not finished"]
    assert rows[0]["reference"]["R"] == 0.25 and rows[0]["reference"]["bits"] == 123.0
    assert rows[0]["reference"]["p1"] is None
    r = run(*args, "--bits", 4, "--method", "rtn")
    assert r.exit_code == 0 and "1 skipped" in r.output and "0.250" in r.output, r.output


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["RUN", "--bits", 5], "--bits"),
        (["RUN", "--bits", 4, "--method", "awq"], "--method"),
        (["RUN", "--bits", 4, "--group-size", 1], "--group-size"),
        (["RUN", "--bits", 4, "--calib-people", 0], "--calib-people"),
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


def test_quantized_moe_run_is_labelled_rtn_experts(tmp_path):
    """GPTQ rounds MoE experts to nearest: the run's name, config and points say so."""
    cfg = tmp_path / "moe.yaml"
    moe = {
        **TINY,
        "name": "tinymoe",
        "model": {"preset": "gpt2-1-1-moe4", "overrides": {"d_model": 16}},
    }
    cfg.write_text(json.dumps({**moe, "training": {**TINY["training"], "exposures": 2}}))
    db = tmp_path / "k.db"
    assert run("train", cfg, "--out", tmp_path / "run", "--db", db).exit_code == 0
    r = run("quantize", tmp_path / "run", "--bits", 4, "--db", db, "--json")
    assert r.exit_code == 0, r.output
    q = json.loads(r.output)["quantize"]
    assert q["experts"] == "rtn" and q["label"] == "int4-gptq-rtn-experts"
    assert "MoE experts (RTN)" in q["quantized"]
    points = {p.name: p for p in load_points(db)}
    assert points["tinymoe-int4-gptq-rtn-experts"].quantizer == "int4-gptq-rtn-experts"
    r = run("quantize", tmp_path / "run", "--bits", 4, "--method", "rtn", "--db", db, "--json")
    assert "experts" not in json.loads(r.output)["quantize"]  # RTN everywhere: nothing to say


def test_calibration_is_one_biography_of_each_of_the_first_people(biod_ds):
    """GPTQ calibrates on the biographies that open the run's training stream: of the first
    ``people`` people (all when fewer), never padded, cut to the run's window length."""
    from types import SimpleNamespace

    from kcap.cli.quantize import calibration_batches
    from kcap.tokenization.factory import make_stream

    cfg = SimpleNamespace(training=SimpleNamespace(seed=3, window=32))
    batches, people = calibration_batches(cfg, biod_ds, 12)
    assert people == 12
    assert all(b.size(1) == 32 for b in batches[:-1]) and batches[-1].size(1) <= 32
    tokens = torch.cat([b.flatten() for b in batches])
    eos = biod_ds.tokenizer.eos_id
    assert int((tokens == eos).sum()) == 12  # the opening eos and one after each but the last
    stream = [w.ids for w in make_stream(biod_ds, exposures=1, seed=3, window=32)]
    trained = torch.from_numpy(np.concatenate([stream[0], *(w[1:] for w in stream[1:])]))
    assert torch.equal(tokens, trained[: len(tokens)])  # the same tokens, in the same order
    assert calibration_batches(cfg, biod_ds, 1000)[1] == biod_ds.n == 30  # all, when fewer
