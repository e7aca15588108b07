"""The float32 fast paths of issue 13 compute what the composite code computes.

`kcap.models.gpt` takes them for float32 tensors outside autocast: q/k rotary in three kernels,
RMSNorm with a hand-written backward, the narrow head, and the summed cross-entropy of
`kcap.models.loss`. Each is checked against the reference path
(`gpt.FAST_PATHS` off) on logits and every gradient; and the fused CPU AdamW of `make_optimizer`
against torch's default one.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from kcap.models import GPT, gpt, preset
from kcap.models.loss import _SummedNLL, summed_nll
from kcap.training.config import TrainingSpec
from kcap.training.schedule import make_optimizer

torch.set_num_threads(1)

V = 53


@contextlib.contextmanager
def reference_paths():
    saved = dict(gpt.FAST_PATHS)
    gpt.FAST_PATHS.update(dict.fromkeys(saved, False))
    try:
        yield
    finally:
        gpt.FAST_PATHS.update(saved)


def _model(name: str, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(preset(name, V, context=16, **overrides))
    with torch.no_grad():  # away from init (unit norm gains, zero biases) so mismatches show
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _logits_and_grads(model: GPT, idx: torch.Tensor):
    logits = model(idx)
    F.cross_entropy(logits.flatten(0, 1), idx.roll(-1, 1).flatten()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return logits.detach(), grads


def _assert_same(fast, ref):
    torch.testing.assert_close(fast[0], ref[0], rtol=1e-5, atol=1e-5)
    assert fast[1].keys() == ref[1].keys()
    for n in ref[1]:
        torch.testing.assert_close(fast[1][n], ref[1][n], rtol=1e-4, atol=1e-6, msg=n)


class _Count:
    def __init__(self, monkeypatch, fn):
        self.n, apply = 0, fn.apply

        def counted(*args):
            self.n += 1
            return apply(*args)

        monkeypatch.setattr(fn, "apply", counted)


CASES = {
    "gpt2": ("gpt2-2-2", dict(d_model=32)),
    "llama": ("llama-2-2", dict(d_model=32)),
    "gpt2-half-rotary-untied": ("gpt2-1-4", dict(rotary_fraction=0.5, tied=False)),
    "llama-bias-gelu-tied": ("llama-1-2", dict(bias=True, activation="gelu", tied=True)),
    "llama-d128": ("llama-1-2", dict(d_model=128)),  # head too wide for `_NarrowHead`
    "mistral-gqa": ("mistral-2-4", dict(d_model=32)),
    "gpt2-moe": ("gpt2-1-2-moe4", dict(d_model=32)),
}


@pytest.mark.parametrize("case", CASES)
def test_fast_model_equals_composite_model(case, monkeypatch):
    name, overrides = CASES[case]
    model = _model(name, **overrides)
    idx = torch.randint(0, V, (3, 16))
    rotary = _Count(monkeypatch, gpt._SplitRotary)
    fast = _logits_and_grads(model, idx)
    assert rotary.n == model.cfg.n_layer  # every attention took the fast path
    with reference_paths():
        ref = _logits_and_grads(model, idx)
    assert rotary.n == model.cfg.n_layer
    _assert_same(fast, ref)


def test_autocast_and_float64_take_the_composite_path(monkeypatch):
    model = _model("llama-2-2", d_model=32)
    idx = torch.randint(0, V, (2, 16))
    rotary, rms = _Count(monkeypatch, gpt._SplitRotary), _Count(monkeypatch, gpt._RMSNorm)
    head = _Count(monkeypatch, gpt._NarrowHead)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(idx).dtype == torch.float32
    with torch.no_grad():
        wide = model.double()(idx)
        with reference_paths():
            torch.testing.assert_close(wide, model(idx), rtol=0, atol=0)
    assert rotary.n == rms.n == head.n == 0


@pytest.mark.parametrize(("nh", "nkv", "hd", "rot"), [(2, 2, 16, 4), (2, 2, 16, 16), (4, 2, 8, 8),
                                                      (4, 1, 32, 8), (1, 1, 2, 2)])  # fmt: skip
def test_split_rotary_equals_reference(nh, nkv, hd, rot):
    B, T = 3, 11
    cos, sin = gpt.rope_cache(T, rot, 10000.0)
    qkv = torch.randn(B, T, (nh + 2 * nkv) * hd, requires_grad=True)
    ref = gpt.split_rotary_reference(qkv, cos, sin, nh, nkv)
    tables = gpt.rotary_tables(cos, sin, nh + nkv, hd)
    fast = gpt._SplitRotary.apply(qkv, *tables, nh, nkv)
    grads = [torch.randn_like(t) for t in ref]
    for a, b in zip(fast, ref, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    (g_fast,) = torch.autograd.grad(fast, qkv, grads)
    (g_ref,) = torch.autograd.grad(ref, qkv, grads)
    torch.testing.assert_close(g_fast, g_ref, rtol=0, atol=1e-6)


def test_rms_norm_equals_reference():
    x = torch.randn(3, 5, 24, requires_grad=True)
    w = (1 + 0.3 * torch.randn(24)).requires_grad_()
    fast, ref = gpt._RMSNorm.apply(x, w, 1e-5), gpt.rms_norm_reference(x, w, 1e-5)
    assert torch.equal(fast, ref)  # the same forward ops
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(fast, (x, w), g), torch.autograd.grad(ref, (x, w), g),
                    strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_narrow_head_equals_linear():
    model = _model("gpt2-1-2", d_model=32)
    idx = torch.randint(0, V, (2, 16))
    with reference_paths():
        gpt.FAST_PATHS["head"] = True
        fast = _logits_and_grads(model, idx)
        gpt.FAST_PATHS["head"] = False
        ref = _logits_and_grads(model, idx)
    assert torch.equal(fast[0], ref[0])
    _assert_same(fast, ref)


def test_rope_and_rotary_tables_are_reused():
    model = _model("llama-2-2", d_model=32)
    a, b = model._rope(16, torch.device("cpu")), model._rope(16, torch.device("cpu"))
    assert a[0] is b[0] and a[1] is b[1]
    model(torch.randint(0, V, (1, 16)))
    tables = model.blocks[0].attn._tables
    model(torch.randint(0, V, (1, 16)))
    assert model.blocks[0].attn._tables is tables
    short = model._rope(9, torch.device("cpu"))
    assert short[0].shape == (9, model.cfg.rotary_dims)


def test_fused_cpu_adamw_follows_the_default_one():
    """`make_optimizer(fused=True)` is torch's fused kernel on a CPU too; 200 steps with decay,
    no decay and a changing lr stay within float32 rounding of the default implementation."""
    spec = TrainingSpec(lr=3e-3, weight_decay=0.1)
    models = [_model("llama-1-2", d_model=16), _model("llama-1-2", d_model=16)]
    opts = [make_optimizer(models[0], spec, fused=True), make_optimizer(models[1], spec)]
    assert opts[0].defaults["fused"] is True and not opts[1].defaults["fused"]
    gen = torch.Generator().manual_seed(0)
    for step in range(200):
        grads = [torch.randn(p.shape, generator=gen) for p in models[0].parameters()]
        for model, opt in zip(models, opts, strict=True):
            for group in opt.param_groups:
                group["lr"] = spec.lr * (1 - step / 200)
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_training_with_fast_paths_follows_the_reference():
    """20 AdamW steps on the same batches: the fast paths stay with the composite path (the
    losses to float32 rounding; weights loosely, as Adam's normalised step turns rounding-level
    differences of near-zero gradients into differences of up to the learning rate)."""
    models = [_model("gpt2-2-2", d_model=32), _model("gpt2-2-2", d_model=32)]
    spec = TrainingSpec(lr=1e-2)
    opts = [make_optimizer(m, spec) for m in models]
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        idx = torch.randint(0, V, (2, 17), generator=gen)
        losses = []
        for i, (model, opt) in enumerate(zip(models, opts, strict=True)):
            with reference_paths() if i else contextlib.nullcontext():
                y = idx[:, 1:].flatten()
                loss = summed_nll(model(idx[:, :-1]).flatten(0, 1), y, -1) / y.numel()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)


@pytest.mark.parametrize("ignored", [0, 5, 40])
def test_summed_nll_equals_cross_entropy(ignored, monkeypatch):
    """The loss and its gradient, with ignored targets (none, some, all) and a scaled upstream
    gradient, as `F.cross_entropy(reduction="sum")` gives them."""
    gen = torch.Generator().manual_seed(ignored)
    logits = (3 * torch.randn(40, 1152, generator=gen)).requires_grad_()
    targets = torch.randint(0, 1152, (40,), generator=gen)
    targets[torch.randperm(40, generator=gen)[:ignored]] = -1
    calls = _Count(monkeypatch, _SummedNLL)
    fast = summed_nll(logits, targets, -1)
    assert calls.n == 1
    (g_fast,) = torch.autograd.grad(0.37 * fast, logits)
    ref = F.cross_entropy(logits, targets, ignore_index=-1, reduction="sum")
    (g_ref,) = torch.autograd.grad(0.37 * ref, logits)
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-5, atol=1e-7)
    if ignored:
        assert g_fast[targets == -1].abs().max().item() == 0


def test_summed_nll_refuses_a_second_backward_and_other_paths_take_torch(monkeypatch):
    logits = torch.randn(8, 11, requires_grad=True)
    targets = torch.randint(0, 11, (8,))
    loss = summed_nll(logits, targets, -1)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()
    calls = _Count(monkeypatch, _SummedNLL)
    with reference_paths():
        summed_nll(logits, targets, -1)
    summed_nll(logits.double(), targets, -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        summed_nll(logits, targets, -1)
    assert calls.n == 0
