"""Tests of the mixture-of-experts MLP (kcap.models.moe) and its wiring into GPT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from kcap.models import GPT, ModelConfig, count_parameters, count_parameters_from_config, preset
from kcap.models.gpt import MLP, Block, GatedMLP
from kcap.models.moe import MoEMLP, balance_loss, expert_capacity, moe_loop_reference

torch.set_num_threads(1)


def _cfg(**kw) -> ModelConfig:
    base = dict(n_layer=1, n_head=2, d_model=16, vocab_size=10, n_experts=4, top_k=1)
    return ModelConfig(**(base | kw))


def _layer(seed: int = 0, **kw) -> MoEMLP:
    torch.manual_seed(seed)
    layer = MoEMLP(_cfg(**kw))
    with torch.no_grad():  # non-trivial biases and a router that is far from uniform
        for b in (layer.b_in, layer.b_out):
            if b is not None:
                b.normal_(std=0.1)
        layer.router.weight.normal_(std=0.5)
    return layer


def _route_in_order(layer: MoEMLP) -> torch.Tensor:
    """Router preferring expert 0, then 1, 2, ... for inputs with a positive sum; returns such
    inputs (N=12 tokens)."""
    E, d = layer.n_experts, layer.d_model
    with torch.no_grad():
        layer.router.weight.copy_(-torch.arange(E).float().unsqueeze(1).expand(E, d) / d)
    return torch.rand(2, 6, d) + 0.1


# ---------------------------------------------------------------- config and presets


def test_moe_presets_and_validation():
    c = preset("gpt2-2-2-moe32", 100)
    assert (c.n_experts, c.top_k, c.expert_hidden, c.is_moe, c.has_mlp) == (32, 1, 128, True, True)
    assert (c.capacity_factor_train, c.aux_loss_coef) == (2.0, 0.01)
    # the retired eval capacity factor: saved configs carrying it still load, and it is ignored
    assert "capacity_factor_eval" not in c.model_dump()
    assert ModelConfig(**c.model_dump(), capacity_factor_eval=8.0) == c
    assert preset("gpt2-2-2-moe32", 100, capacity_factor_eval=0.5) == c
    assert preset("gpt2-2-2-moe8", 100, top_k=2).top_k == 2
    assert preset("llama-1-2-moe4", 100).mlp_gated
    assert not preset("gpt2-2-2", 100).is_moe
    for bad in ("gpt2-2-2-moe", "gpt2-2-2-moe0", "gpt2-2-2-moeX", "gpt2-2-2-top2"):
        with pytest.raises(ValueError, match=r"unknown model preset .*-moeE"):
            preset(bad, 100)
    with pytest.raises(ValidationError):
        preset("gpt2-2-2-moe4", 100, top_k=3)
    with pytest.raises(ValidationError, match="exceeds n_experts"):
        preset("gpt2-2-2-moe1", 100, top_k=2)
    with pytest.raises(ValidationError, match="no hidden units"):
        preset("gpt2-1-1-moe2", 100, expert_hidden_ratio=0.001)


def test_expert_capacity():
    assert expert_capacity(2.0, 100, 1, 32) == math.ceil(200 / 32) == 7
    assert expert_capacity(1.0, 100, 2, 8) == 25
    assert expert_capacity(8.0, 10, 1, 2) == 10  # never more than the number of tokens
    assert expert_capacity(0.0, 10, 2, 4) == expert_capacity(-1.0, 10, 1, 4) == 10


# ---------------------------------------------------------------- layer semantics


@pytest.mark.parametrize(("gated", "act", "bias"), [(False, "gelu", True), (True, "silu", False)])
def test_single_expert_equals_dense_mlp(gated, act, bias):
    kw = dict(n_experts=1, mlp_gated=gated, activation=act, bias=bias)
    layer = _layer(**kw, capacity_factor_train=0.0)
    dense_cfg = _cfg(**kw, mlp_ratio=1)
    dense = GatedMLP(dense_cfg) if gated else MLP(dense_cfg)
    h = dense_cfg.hidden
    with torch.no_grad():
        w_in, w_out = layer.w_in[0].T, layer.w_out[0].T
        if gated:
            dense.gate.weight.copy_(w_in[:h])
            dense.up.weight.copy_(w_in[h:])
            dense.down.weight.copy_(w_out)
        else:
            dense.fc.weight.copy_(w_in)
            dense.proj.weight.copy_(w_out)
            dense.fc.bias.copy_(layer.b_in[0])
            dense.proj.bias.copy_(layer.b_out[0])
    x = torch.randn(3, 5, 16)
    for mode in (True, False):
        layer.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), dense(x), atol=1e-6, rtol=1e-5)
        assert layer.aux_loss.item() == pytest.approx(1.0)
        assert layer.drop_fraction.item() == 0.0


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize(("gated", "bias"), [(False, True), (True, False)])
@pytest.mark.parametrize("cf", [0.5, 1.0, 8.0, 0.0])
def test_vectorised_equals_loop_reference(top_k, gated, bias, cf):
    layer = _layer(
        n_experts=6,
        top_k=top_k,
        mlp_gated=gated,
        bias=bias,
        expert_hidden_ratio=1.5,
        capacity_factor_train=cf,
    )
    x = torch.randn(4, 9, 16)
    for mode in (True, False):
        layer.train(mode)
        assert layer.capacity_factor == (cf if mode else 0.0)  # eval mode: no capacity limit
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y, ref = layer(x1), moe_loop_reference(layer, x2, layer.capacity_factor)
        torch.testing.assert_close(y, ref, atol=1e-6, rtol=1e-5)
        w = torch.randn_like(y)
        g1 = torch.autograd.grad((y * w).sum(), [x1, *layer.parameters()])
        g2 = torch.autograd.grad((ref * w).sum(), [x2, *layer.parameters()])
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        if mode and cf == 0.5:
            assert layer.drop_fraction.item() > 0  # the capacity limit was exercised
        if not mode:
            assert layer.drop_fraction.item() == 0.0


def test_capacity_respected_and_dropped_tokens_pass_unchanged():
    cfg = _cfg(n_experts=4, capacity_factor_train=1.0)
    torch.manual_seed(0)
    block = Block(cfg)
    layer = block.mlp
    assert isinstance(layer, MoEMLP)
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[0] = 1.0  # every token with a positive sum picks expert 0
        block.ln_2.bias.fill_(1.0)  # normed inputs have a positive sum
        block.attn.proj.weight.zero_()  # the attention branch adds nothing
        block.attn.proj.bias.zero_()
    seen = []
    run = layer.experts
    layer.experts = lambda buf: (seen.append(buf.detach()), run(buf))[1]
    x = torch.randn(2, 6, 16)
    N = 12
    cos, sin = torch.ones(6, cfg.rotary_dims), torch.zeros(6, cfg.rotary_dims)
    for mode in (True, False):  # eval mode: no capacity limit, all N tokens are served
        block.train(mode)
        seen.clear()
        with torch.no_grad():
            out = block(x, cos, sin).reshape(N, 16)
        cap = expert_capacity(1.0, N, 1, 4) if mode else N
        assert cap == (3 if mode else 12)
        buf = seen[0]
        filled = buf.abs().sum(-1) > 0  # (E, C): rows holding a token
        assert buf.shape[1] <= cap and filled.sum(1).tolist() == [cap, 0, 0, 0]
        # the first `cap` tokens are served, the rest are dropped and pass unchanged
        flat = x.reshape(N, 16)
        assert not torch.allclose(out[:cap], flat[:cap])
        if cap < N:
            torch.testing.assert_close(out[cap:], flat[cap:], atol=0, rtol=0)
        assert layer.drop_fraction.item() == pytest.approx(1 - cap / N)


def test_top2_priority_first_choices_before_second_choices():
    layer = _layer(n_experts=3, top_k=2, capacity_factor_train=0.5, bias=False)
    N, d = 12, 16
    x = torch.zeros(N, d)
    x[:6, 0] = 1.0  # tokens 0-5: expert 0 first, expert 1 second
    x[6:, 1] = 1.0  # tokens 6-11: expert 1 first, expert 0 second
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[0, :2] = torch.tensor([2.0, 1.0])
        layer.router.weight[1, :2] = torch.tensor([1.0, 2.0])
    _, gates, top_e = layer.route(x)
    assert top_e[:6].tolist() == [[0, 1]] * 6 and top_e[6:].tolist() == [[1, 0]] * 6
    torch.testing.assert_close(gates.sum(-1), torch.ones(N))  # top-2 gates renormalised
    cap = expert_capacity(0.5, N, 2, 3)
    assert cap == 4
    layer.train()
    with torch.no_grad():
        y = layer(x)
        # each expert is filled by first choices (token order); every second choice is dropped
        for t in range(N):
            e = 0 if t < 6 else 1
            want = gates[t, 0] * (F.gelu(x[t] @ layer.w_in[e]) @ layer.w_out[e])
            if t % 6 >= cap:
                want = torch.zeros(d)
            torch.testing.assert_close(y[t], want)
    assert layer.drop_fraction.item() == pytest.approx(1 - 2 * cap / (2 * N))


def test_top1_gate_is_raw_probability():
    layer = _layer(n_experts=5, top_k=1)
    x = torch.randn(7, 16)
    probs, gates, top_e = layer.route(x)
    torch.testing.assert_close(gates[:, 0], probs.max(-1).values)
    assert (gates < 1).all() and (top_e[:, 0] == probs.argmax(-1)).all()


# ---------------------------------------------------------------- balancing loss, gradients


def test_balance_loss():
    E, N = 8, 64
    uniform = torch.full((N, E), 1 / E)
    assert balance_loss(uniform, torch.arange(N) % E).item() == pytest.approx(1.0)
    assert balance_loss(uniform, torch.zeros(N, dtype=torch.long)).item() == pytest.approx(1.0)
    skewed = torch.softmax(torch.randn(N, E) + 3 * F.one_hot(torch.zeros(N).long(), E), -1)
    assert balance_loss(skewed, skewed.argmax(-1)).item() > 2.0
    # a zero router is uniform: the layer reports the minimum 1
    layer = _layer(n_experts=8)
    with torch.no_grad():
        layer.router.weight.zero_()
    layer(torch.randn(3, 4, 16))
    assert layer.aux_loss.item() == pytest.approx(1.0)
    layer2 = _layer(n_experts=8)
    x = _route_in_order(layer2)
    with torch.no_grad():
        layer2.router.weight.mul_(50)
    layer2(x)
    assert layer2.aux_loss.item() > 4.0
    # its gradient pushes the router towards balance: it reaches the router only
    layer2.aux_loss.backward()
    assert layer2.router.weight.grad.abs().sum() > 0 and layer2.w_in.grad is None


def test_gradients_reach_selected_experts_only():
    layer = _layer(n_experts=8, top_k=2, capacity_factor_train=0.0)
    x = torch.randn(1, 2, 16)  # 2 tokens x top-2: at most 4 of 8 experts are used
    layer.train()
    layer(x).pow(2).sum().backward()
    _, _, top_e = layer.route(x.reshape(2, 16))
    used = set(top_e.flatten().tolist())
    for e in range(8):
        for p in (layer.w_in, layer.w_out, layer.b_in, layer.b_out):
            assert (p.grad[e].abs().sum() > 0) == (e in used), (e, used)
    assert layer.router.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- GPT wiring, counts, training


@pytest.mark.parametrize(("L", "H", "E", "k", "V"), [(2, 2, 4, 1, 50), (1, 1, 32, 2, 7)])
def test_gpt2_moe_param_closed_form(L, H, E, k, V):
    d = 64 * H
    expert = 2 * d * d + 2 * d  # d -> d -> d with biases
    per_layer = 4 * d * d + 4 * d + 4 * d + d * E + E * expert  # attn, 2 LNs, router, experts
    body = L * per_layer + 2 * d
    cfg = preset(f"gpt2-{L}-{H}-moe{E}", V, top_k=k)
    counts = count_parameters_from_config(cfg, n_used_tokens=V - 2)
    assert counts.total == body + V * d and counts.non_embedding == body
    assert body + (V - 2) * d == counts.P
    assert counts.active == counts.P - L * (E - k) * expert
    torch.manual_seed(0)
    assert count_parameters(GPT(cfg), n_used_tokens=V - 2) == counts


def test_paper_moe32_active_ratio():
    """Paper §9: GPT2-MoE32 uses 8.8% of its non-embedding parameters per token (11.3x =
    68d^2 / 6d^2; the router's d*E weights, active for every token, make it 11.1x at d=256)."""
    counts = count_parameters_from_config(preset("gpt2-16-4-moe32", 2))
    active_body = counts.active - 2 * 256  # active minus the (tiny) embedding
    assert counts.non_embedding / active_body == pytest.approx(68 / 6, rel=0.03)


def test_gpt_aux_loss_and_metrics():
    dense = GPT(preset("gpt2-1-1", 20, context=8))
    dense(torch.randint(0, 20, (1, 8)))
    assert dense.aux_loss().item() == 0.0 and dense.moe_metrics() == {}
    model = GPT(preset("gpt2-3-1-moe4", 20, context=8, aux_loss_coef=0.5))
    model(torch.randint(0, 20, (2, 8)))
    per_layer = [m.aux_loss for m in model.moe_layers()]
    assert len(per_layer) == 3
    torch.testing.assert_close(model.aux_loss(), 0.5 * sum(per_layer))
    metrics = model.moe_metrics()
    assert set(metrics) == {f"moe/{k}/{i}" for k in ("aux", "dropped") for i in range(3)}
    assert all(v >= 1.0 - 1e-6 for k, v in metrics.items() if "/aux/" in k)
    # init: expert weights N(0, std), residual outputs scaled by 1 / sqrt(2 L)
    layer = model.moe_layers()[0]
    assert layer.w_in.std().item() == pytest.approx(0.02, rel=0.1)
    assert layer.w_out.std().item() == pytest.approx(0.02 / math.sqrt(6), rel=0.1)


def test_moe_gpt_trains():
    V = 16
    torch.manual_seed(0)
    model = GPT(preset("gpt2-2-2-moe4", V, context=16)).train()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, V, (4, 16), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        (loss + model.aux_loss()).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(V), abs=0.3)
    assert losses[-1] < 0.5 * losses[0]
    assert all(math.isfinite(v) for v in model.moe_metrics().values())


# ---------------------------------------------------------------- measurement never drops tokens


def _tight_moe_gpt(V: int) -> GPT:
    """A small MoE GPT whose experts matter (weights far from init) with capacity factors so
    tight that any capacity limit at evaluation would drop most token-slots."""
    torch.manual_seed(0)
    # capacity_factor_eval: a retired key that saved configs carry, now accepted and ignored
    # (before the fix it set the eval capacity: 0.5 dropped half the slots at measurement)
    cfg = preset(
        "gpt2-1-2-moe4",
        V,
        d_model=32,
        context=256,
        capacity_factor_train=0.25,
        capacity_factor_eval=0.5,
    )
    model = GPT(cfg)
    with torch.no_grad():
        for layer in model.moe_layers():
            layer.router.weight.normal_(std=1.0)
            layer.w_in.normal_(std=0.3)
            layer.w_out.normal_(std=0.3)
    return model.eval()


def test_eval_losses_do_not_depend_on_the_batch(bios_ds):
    """Catches capacity (or any cross-token coupling) at evaluation: a person's per-token losses
    must be the same scored alone as inside a 64-document batch padded with <|eos|>."""
    from kcap.measure.losses import token_losses

    tok = bios_ds.tokenizer
    model = _tight_moe_gpt(tok.vocab_size)
    docs = [
        tok.encode_pieces(d.pieces)[0]
        for d in bios_ds.source(eval_=True).documents(0, np.arange(bios_ds.n))
    ]
    rng = np.random.default_rng(0)
    # 64 documents of very different lengths: the biographies, then truncated copies of them
    extra = [docs[i][: rng.integers(3, len(docs[i]))] for i in rng.integers(0, len(docs), 24)]
    batch = docs + extra
    assert len(batch) == 64 and len({len(d) for d in batch}) > 20
    cpu = torch.device("cpu")
    together, hits_together, _ = token_losses(model, batch, tok.eos_id, cpu)
    assert all(m.drop_fraction.item() == 0.0 for m in model.moe_layers())
    for i in (0, 7, 39, 40, 63):
        alone, hits_alone, _ = token_losses(model, [batch[i]], tok.eos_id, cpu)
        assert all(m.drop_fraction.item() == 0.0 for m in model.moe_layers())
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-5, atol=1e-5)
        assert np.array_equal(hits_together[i], hits_alone[0])
    # training keeps its capacity limit
    model.train()
    model(torch.tensor([batch[0]]))
    assert all(m.drop_fraction.item() > 0 for m in model.moe_layers())


def test_measure_does_not_depend_on_the_batch_size(bios_ds):
    """Catches bits that depend on who else shares a measuring batch (MoE capacity at eval)."""
    from kcap.measure import measure

    model = _tight_moe_gpt(bios_ds.tokenizer.vocab_size)
    one = measure(model, bios_ds, P_count=1000, batch_size=1)
    many = measure(model, bios_ds, P_count=1000, batch_size=64)
    assert many.p1 == pytest.approx(one.p1, rel=1e-6)
    assert many.p2 == pytest.approx(one.p2, rel=1e-6)
    for key, v in one.bits_unclipped.items():
        assert many.bits_unclipped[key] == pytest.approx(v, rel=1e-6, abs=1e-3), key
    assert many.loss_per_attribute == pytest.approx(one.loss_per_attribute, rel=1e-6)
    assert many.recall_per_attribute == one.recall_per_attribute
