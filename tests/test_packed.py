"""Packed training: each model of a pack is the model its separate run trains.

The golden property: K runs trained as one `PackedGPT` (different seeds, learning rates, weight
decay, gradient clipping and lengths) end with the weights, optimizer state, metrics,
checkpoints and measurements of the same K runs trained one by one, within fp32 tolerance.

Why a tolerance, and how the math is checked exactly: the pack's LayerNorm applies its gain
outside the fused kernel and AdamW's step size as a tensor, so fp32 results differ in the last
bit, and training at a high learning rate is chaotic: a 1e-7 relative perturbation of the
weights grows to 5e-2 in 300 steps at lr 1e-2 (measured, GPT2-1-2 d 16). So the whole-run test
uses the lab's learning rates, and the update rule is checked for 300 steps at lr 1e-2 and 3e-2
in float64 on a model whose norm has no such difference (llama), where the pack and torch's
AdamW agree to 1e-10.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tests.tiny import tiny_grid, tiny_run

from kcap.experiments.store import ResultsStore
from kcap.models import GPT, preset
from kcap.models.packed import PackedGPT
from kcap.training import checkpoint as ckpt
from kcap.training.config import parse_config
from kcap.training.packed import PackedTrainer, StackedAdamW, pack_key, train_packed
from kcap.training.trainer import Trainer

SHAPES = [
    ("gpt2-2-2", {"d_model": 32}),
    ("llama-2-2", {"d_model": 32}),
    ("mistral-1-4", {"d_model": 32}),
    ("gpt2-1-2", {"d_model": 16, "tied": False, "mlp_ratio": 0}),
]


def _members(cfg, k):
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(GPT(cfg))
    packed = PackedGPT(cfg, k)
    for i, m in enumerate(models):
        packed.load_member(i, m.state_dict())
    return models, packed


@pytest.mark.parametrize(("name", "overrides"), SHAPES)
def test_packed_forward_and_gradients_equal_separate_models(name, overrides):
    cfg = preset(name, 97, context=16, **overrides)
    models, packed = _members(cfg, 3)
    idx = torch.randint(0, 97, (3, 2, 16))
    logits = packed(idx)
    ref = torch.stack([m(idx[i]) for i, m in enumerate(models)])
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    # a different loss per model: gradients must not leak from one model to another
    weights = torch.tensor([1.0, -2.0, 0.5]).view(3, 1, 1, 1)
    packed.backward((logits.square() * weights).sum())
    for i, m in enumerate(models):
        (m(idx[i]).square() * weights[i]).sum().backward()
        for n, p in m.named_parameters():
            got = dict(packed.named_parameters())[n].grad[i]
            torch.testing.assert_close(got, p.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_member_state_round_trips_and_keep_drops_rows():
    cfg = preset("gpt2-1-2", 50, context=8, d_model=16)
    models, packed = _members(cfg, 3)
    for i, m in enumerate(models):
        state = packed.member_state(i)
        assert state.keys() == m.state_dict().keys()
        for n, t in m.state_dict().items():
            assert torch.equal(state[n], t), n
    packed.keep([2, 0])
    assert packed.k == 2 and packed.flat.shape[0] == 2
    assert torch.equal(packed.member_state(0)["wte.weight"], models[2].wte.weight)
    assert torch.equal(
        packed.member_state(1)["blocks.0.attn.qkv.bias"],
        models[0].state_dict()["blocks.0.attn.qkv.bias"],
    )
    # parameters stay views of the buffer, so the optimizer's writes reach the model
    with torch.no_grad():
        packed.flat.zero_()
    assert all(float(p.detach().abs().sum()) == 0 for p in packed.parameters())


def test_stacked_adamw_equals_torch_adamw_per_row():
    cfg = preset("gpt2-1-2", 40, context=8, d_model=16)
    models, packed = _members(cfg, 2)
    lrs, wds = [3e-3, 1e-2], [0.1, 0.0]
    opts = [_torch_adamw(m, lr, wd) for m, lr, wd in zip(models, lrs, wds, strict=True)]
    stacked = StackedAdamW(packed, (0.9, 0.98), 1e-6)
    for _ in range(5):
        idx = torch.randint(0, 40, (2, 2, 8))
        packed.backward(packed(idx).square().mean(dim=(1, 2, 3)).sum())
        stacked.step(torch.tensor(lrs, dtype=torch.float64), torch.tensor(wds, dtype=torch.float64))
        packed.zero_grad()
        for i, (m, opt) in enumerate(zip(models, opts, strict=True)):
            m(idx[i]).square().mean().backward()
            opt.step()
            opt.zero_grad()
    for i, m in enumerate(models):
        for n, p in m.named_parameters():
            torch.testing.assert_close(
                dict(packed.named_parameters())[n][i], p, rtol=1e-4, atol=1e-6, msg=n
            )


def test_packed_training_equals_torch_adamw_in_float64():
    """300 steps with clipping, decay and two learning rates: the same math as clip_grad_norm_
    and torch.optim.AdamW on each model, to float64 rounding."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        cfg = preset("llama-1-2", 40, context=16, d_model=16)
        models, packed = _members(cfg, 2)
        lrs, wds = [1e-2, 3e-2], [0.1, 0.01]
        opts = [_torch_adamw(m, lr, wd) for m, lr, wd in zip(models, lrs, wds, strict=True)]
        stacked = StackedAdamW(packed, (0.9, 0.98), 1e-6)
        gen = torch.Generator().manual_seed(0)
        for _ in range(300):
            idx = torch.randint(0, 40, (2, 4, 17), generator=gen)
            x, y = idx[..., :-1], idx[..., 1:]
            nll = F.cross_entropy(packed(x).flatten(0, 2), y.flatten(), reduction="none")
            packed.backward(nll.view(2, -1).mean(1).sum())
            grad = packed.flat_grad
            grad.mul_((1.0 / (grad.pow(2).sum(1).sqrt() + 1e-6)).clamp(max=1.0).unsqueeze(1))
            stacked.step(torch.tensor(lrs), torch.tensor(wds))
            packed.zero_grad()
            for i, (m, opt) in enumerate(zip(models, opts, strict=True)):
                F.cross_entropy(m(x[i]).flatten(0, 1), y[i].flatten()).backward()
                torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                opt.step()
                opt.zero_grad()
        for i, m in enumerate(models):
            for n, p in m.named_parameters():
                got = dict(packed.named_parameters())[n][i]
                torch.testing.assert_close(got, p, rtol=0, atol=1e-10, msg=n)
    finally:
        torch.set_default_dtype(default)


def _torch_adamw(model, lr, wd):
    return torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": wd},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


def _raw(bios_dir, **training):
    return tiny_run(
        bios_dir,
        **{"exposures": 2, "checkpoint_every": 7, "log_every": 3, "batch_size": 3} | training,
    )


VARIANTS = [  # what may differ between the members of one pack
    {"seed": 0},
    {"seed": 1, "lr": 2e-3, "weight_decay": 0.0},
    {"seed": 2, "grad_clip": 0.0, "warmup_steps": 2, "exposures": 1},
]


def _assert_same_run(packed_dir, single_dir):
    a, b = ckpt.load_latest(packed_dir)[0], ckpt.load_latest(single_dir)[0]
    assert a["step"] == b["step"] and a["tokens"] == b["tokens"]
    for n, t in b["model"].items():
        torch.testing.assert_close(a["model"][n], t, rtol=1e-4, atol=2e-5, msg=n)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sb:
        assert float(sa[i]["step"]) == float(sb[i]["step"])
        torch.testing.assert_close(sa[i]["exp_avg"], sb[i]["exp_avg"], rtol=1e-3, atol=1e-6)
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        b["optimizer"]["param_groups"][0]["lr"]
    )
    ma = json.loads((packed_dir / "measure.json").read_text())
    mb = json.loads((single_dir / "measure.json").read_text())
    assert ma["bits"]["total"] == pytest.approx(mb["bits"]["total"], rel=1e-3, abs=1e-2)
    assert ma["P"] == mb["P"]
    la = [json.loads(x) for x in (packed_dir / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (single_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for ra, rb in zip(la, lb, strict=True):
        if "loss" in rb:
            assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4)
            assert ra["lr"] == pytest.approx(rb["lr"])
    summary = json.loads((packed_dir / "run.json").read_text())
    assert summary["packed_with"] == len(VARIANTS)
    assert summary["exposures"] == json.loads((single_dir / "run.json").read_text())["exposures"]


def test_packed_runs_equal_separate_runs(bios_dir, tmp_path):
    cfgs = [parse_config(_raw(bios_dir, **v)) for v in VARIANTS]
    for i, cfg in enumerate(cfgs):
        Trainer(cfg, tmp_path / f"single{i}", progress=False).fit()
    members = [Trainer(c, tmp_path / f"packed{i}", progress=False) for i, c in enumerate(cfgs)]
    assert len({m.total_steps for m in members}) == 2  # the shorter run leaves the pack early
    # a member whose last batch is short, while the others' are full: padded in the pack
    assert any(m.total_windows % m.global_batch for m in members)
    outcomes = PackedTrainer(members).fit()
    assert all(o.error is None and o.result is not None for o in outcomes.values())
    for i in range(len(cfgs)):
        _assert_same_run(tmp_path / f"packed{i}", tmp_path / f"single{i}")


def test_packed_run_resumes_alone_and_in_a_pack(bios_dir, tmp_path):
    """Stopped part-way in a pack, a member resumes in a new pack next to a fresh member and
    another resumes alone: both end as their uninterrupted separate runs."""
    cfgs = [parse_config(_raw(bios_dir, **v)) for v in VARIANTS[:2]]
    for i, cfg in enumerate(cfgs):
        Trainer(cfg, tmp_path / f"single{i}", progress=False).fit()
    members = [Trainer(c, tmp_path / f"packed{i}", progress=False) for i, c in enumerate(cfgs)]
    pack = PackedTrainer(members)
    from kcap.training import interrupt

    calls = [0]
    original = pack._step

    def stop_after_ten(batches):
        calls[0] += 1
        if calls[0] == 10:
            interrupt.request("SIGTERM", 143)
        return original(batches)

    pack._step = stop_after_ten
    with pytest.raises(interrupt.RunInterrupted):
        pack.fit()
    interrupt.clear()
    assert [ckpt.load_latest(tmp_path / f"packed{i}")[0]["step"] for i in range(2)] == [10, 10]
    alone = Trainer(cfgs[0], tmp_path / "packed0", progress=False)
    assert alone.load_checkpoint()
    alone.fit()
    again = Trainer(cfgs[1], tmp_path / "packed1", progress=False)
    assert again.load_checkpoint()
    fresh_cfg = parse_config(_raw(bios_dir, seed=5))
    fresh = Trainer(fresh_cfg, tmp_path / "fresh", progress=False)
    outcomes = train_packed([again, fresh])
    assert set(outcomes) == {"packed1", "fresh"}
    for i in range(2):
        _assert_same_run_weights(tmp_path / f"packed{i}", tmp_path / f"single{i}")


def _assert_same_run_weights(a_dir, b_dir):
    a, b = ckpt.load_latest(a_dir)[0], ckpt.load_latest(b_dir)[0]
    assert a["step"] == b["step"]
    for n, t in b["model"].items():
        torch.testing.assert_close(a["model"][n], t, rtol=1e-4, atol=2e-5, msg=n)


def test_a_diverging_member_stops_alone(bios_dir, tmp_path):
    cfgs = [parse_config(_raw(bios_dir, seed=s)) for s in (0, 1)]
    Trainer(cfgs[0], tmp_path / "single", progress=False).fit()
    members = [Trainer(c, tmp_path / f"m{i}", progress=False) for i, c in enumerate(cfgs)]
    with torch.no_grad():  # member 1's weights are broken before training starts
        members[1].model.blocks[0].attn.qkv.weight[0, 0] = float("nan")
    outcomes = PackedTrainer(members).fit()
    assert "not finite at step 1" in str(outcomes["m1"].error)
    assert not (tmp_path / "m1" / "checkpoint.pt").exists()  # nothing broken was saved
    assert outcomes["m0"].result is not None
    _assert_same_run_weights(tmp_path / "m0", tmp_path / "single")


def test_pack_key_refuses_what_cannot_pack(bios_dir):
    base = parse_config(_raw(bios_dir))
    assert pack_key(base) == pack_key(parse_config(_raw(bios_dir, seed=3, lr=1e-2)))
    assert pack_key(base) != pack_key(parse_config(_raw(bios_dir, batch_size=5)))
    assert pack_key(parse_config(_raw(bios_dir, on_nan="skip"))) is None
    assert pack_key(parse_config(_raw(bios_dir, compile=True))) is None
    init = _raw(bios_dir)  # the init scale only shapes the first weights: it packs
    init["model"] = {"preset": "gpt2-1-1", "overrides": {"d_model": 32, "init_std": 0.01}}
    assert pack_key(parse_config(init)) == pack_key(base)
    moe = _raw(bios_dir)
    moe["model"] = {"preset": "gpt2-1-1-moe4", "overrides": {"d_model": 32}}
    assert pack_key(parse_config(moe)) is None


def _sweep(tmp_path, tag: str, *extra: str, grid=None):
    from typer.testing import CliRunner

    from kcap.cli.main import app

    grid = grid or tiny_grid(tmp_path / "grid.yaml", exposures=2)
    db, out = tmp_path / f"{tag}.db", tmp_path / tag
    args = ["sweep", str(grid), "--db", str(db), "--out", str(out), "--no-progress"]
    args += ["--threads", "1", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with ResultsStore(db) as store:
        return {r.run_id: r for r in store.list_runs()}, result.output


def test_sweep_pack_records_the_rows_of_separate_runs(tmp_path):
    """`kcap sweep --pack 2`: the same run ids, rows and measurements as the unpacked sweep,
    each run in its own directory, marked as packed; a second sweep has nothing to do."""
    grid = tiny_grid(tmp_path / "grid.yaml", exposures=2, measurement={"every": 10})
    alone, _ = _sweep(tmp_path, "alone", grid=grid)
    packed, output = _sweep(tmp_path, "packed", "--pack", "2", grid=grid)
    assert "packs of up to 2" in output and "2 finished" in output
    assert packed.keys() == alone.keys() and len(packed) == 2
    for run_id, rec in packed.items():
        ref = alone[run_id]
        assert rec.status == "finished" and rec.timings["packed_with"] == 2
        assert "packed_with" not in ref.timings
        assert rec.metrics["bits"]["total"] == pytest.approx(ref.metrics["bits"]["total"], rel=1e-3)
        assert [h["step"] for h in rec.metrics["history"]] == [
            h["step"] for h in ref.metrics["history"]
        ]
        assert rec.params == ref.params
        assert (Path(rec.run_dir) / "measure.json").is_file()
    _, again = _sweep(tmp_path, "packed", "--pack", "2", grid=grid)
    assert "ran 0" in again


def test_sweep_pack_stopped_resumes_every_member(tmp_path):
    """SIGTERM to a packed sweep: every member checkpoints and is marked interrupted; the next
    sweep (unpacked this time) resumes each from its checkpoint to the separate run's result."""
    import os
    import signal
    import subprocess
    import sys
    import time

    grid = tiny_grid(tmp_path / "grid.yaml", exposures=10, checkpoint_every=5)
    db, out = tmp_path / "p.db", tmp_path / "p"
    cmd = [sys.executable, "-m", "kcap.cli.main", "sweep", str(grid), "--db", str(db)]
    cmd += ["--out", str(out), "--pack", "2", "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("runs/*/checkpoint.pt"))) < 2:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output
    with ResultsStore(db) as store:
        recs = store.list_runs()
    assert len(recs) == 2 and all(r.error.startswith("interrupted") for r in recs), output
    steps = [ckpt.load_latest(Path(r.run_dir))[0]["step"] for r in recs]
    assert all(s > 0 for s in steps)
    resumed, _ = _sweep(tmp_path, "p", grid=grid)
    for rec in resumed.values():  # against the run trained alone, uninterrupted
        assert rec.status == "finished" and rec.timings["resumed"]
        assert rec.timings["wall_s"] >= rec.timings["train_s"]  # every leg, not the last one
        alone = tmp_path / "alone" / rec.run_id
        alone.mkdir(parents=True)
        (alone / "dataset").symlink_to((Path(rec.run_dir) / "dataset").resolve())
        Trainer(parse_config(rec.config), alone, progress=False, threads=1).fit()
        _assert_same_run_weights(Path(rec.run_dir), alone)


def test_a_member_that_leaves_its_pack_is_recorded_at_once(tmp_path):
    """A packed member's row is written when it finishes, as a run alone's is, not when its
    pack returns: while the longer member still trains, the shorter one's row is finished."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    grid = tiny_grid(tmp_path / "grid.yaml", checkpoint_every=5)
    raw = json.loads(grid.read_text())
    raw["product"] = {"training.exposures": [2, 400]}  # one member ends ~200x sooner
    grid.write_text(json.dumps(raw))
    db, out = tmp_path / "p.db", tmp_path / "p"
    cmd = [sys.executable, "-m", "kcap.cli.main", "sweep", str(grid), "--db", str(db)]
    cmd += ["--out", str(out), "--pack", "2", "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, statuses = time.time() + 120, []
        while time.time() < deadline and statuses != ["finished", "running"]:
            time.sleep(0.2)
            if db.is_file():
                with ResultsStore(db) as store:
                    recs = store.list_runs()
                by_exposures = sorted(recs, key=lambda r: r.config["training"]["exposures"])
                statuses = [r.status for r in by_exposures]
        assert statuses == ["finished", "running"]
        short = by_exposures[0]
        assert short.metrics["bits"]["total"] >= 0 and short.timings["packed_with"] == 2
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=120)
    with ResultsStore(db) as store:
        after = {r.run_id: r for r in store.list_runs()}
    assert after[short.run_id].status == "finished"  # the stop leaves the finished row alone
    assert after[by_exposures[1].run_id].error.startswith("interrupted")


def test_sweep_with_pack_trains_a_model_that_never_packs_alone(tmp_path):
    """`kcap sweep --pack 3` over a mixture of experts (`pack_key` None): each run trains on
    the plain path, as without --pack, instead of failing in a pack of one."""
    grid = tiny_grid(tmp_path / "grid.yaml", exposures=2)
    spec = json.loads(grid.read_text())
    spec["base"]["model"] = {"preset": "gpt2-1-1-moe4", "overrides": {"d_model": 16}}
    grid.write_text(json.dumps(spec))
    runs, output = _sweep(tmp_path, "moe", "--pack", "3", grid=grid)
    assert len(runs) == 2 and "2 finished" in output, output
    assert all(r.status == "finished" and "packed_with" not in r.timings for r in runs.values())
