"""Tests of kcap.models: config/presets, parameter closed forms, attention, rotary, training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import ValidationError

from kcap.models import (
    GPT,
    ModelConfig,
    count_parameters,
    count_parameters_from_config,
    preset,
)
from kcap.models.gpt import apply_rotary, rope_cache

torch.set_num_threads(1)


def _model(cfg: ModelConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


# ---------------------------------------------------------------- config and presets


def test_config_defaults_and_validation():
    cfg = ModelConfig(n_layer=1, n_head=3, vocab_size=10)
    assert cfg.d_model == 192 and cfg.head_dim == 64 and cfg.hidden == 768
    assert cfg.kv_heads == 3 and cfg.rotary_dims == 16
    assert ModelConfig(n_layer=1, n_head=2, d_model=0, vocab_size=10).d_model == 128
    assert ModelConfig(n_layer=1, n_head=2, d_model=12, vocab_size=10).rotary_dims == 2
    # head_dim 10 * 0.25 = 2.5 -> 2; 10 * 0.5 = 5 -> 4 (even)
    assert ModelConfig(n_layer=1, n_head=2, d_model=20, vocab_size=10).rotary_dims == 2
    kw = dict(n_layer=1, n_head=2, d_model=20, vocab_size=10)
    assert ModelConfig(**kw, rotary_fraction=0.5).rotary_dims == 4
    # a floor of rotated dims, capped at the head: the paper's 16 in the lab's narrow heads
    floor = dict(n_layer=1, n_head=2, vocab_size=10, rotary_min_dims=16)
    assert [ModelConfig(**floor, d_model=d).rotary_dims for d in (16, 24, 96, 128)] == [
        8,
        12,
        16,
        16,
    ]
    assert ModelConfig(**floor, d_model=256, rotary_fraction=0.5).rotary_dims == 64
    odd = ModelConfig(n_layer=1, n_head=1, d_model=7, vocab_size=10, rotary_min_dims=8)
    assert odd.rotary_dims == 6  # dims rotate in pairs: a 7-dim head rotates 6
    with pytest.raises(ValidationError, match="even"):
        ModelConfig(n_layer=1, n_head=2, vocab_size=10, rotary_min_dims=3)
    with pytest.raises(ValidationError, match="divisible"):
        ModelConfig(n_layer=1, n_head=3, d_model=100, vocab_size=10)
    with pytest.raises(ValidationError, match="must divide"):
        ModelConfig(n_layer=1, n_head=4, vocab_size=10, n_kv_head=3)
    with pytest.raises(ValidationError):
        ModelConfig(n_layer=1, n_head=2, vocab_size=10, rotary_fraction=0.0)
    with pytest.raises(ValidationError):
        ModelConfig(n_layer=1, n_head=2, vocab_size=10, dropout=0.1)  # extra="forbid"
    with pytest.raises(ValidationError):
        cfg.n_layer = 2  # frozen


def test_presets():
    g = preset("gpt2-3-2", 100)
    assert (g.n_layer, g.n_head, g.d_model, g.hidden) == (3, 2, 128, 512)
    assert g.norm == "layernorm" and g.norm_bias and g.bias and g.tied and not g.mlp_gated
    assert g.rotary_dims == 16 and g.activation == "gelu" and g.context == 512
    for h in range(1, 25):
        d = 64 * h
        ll = preset(f"llama-1-{h}", 100)
        assert ll.hidden == round(8 * d / 3)
        assert ll.norm == "rmsnorm" and not ll.bias and not ll.tied and ll.mlp_gated
        assert ll.rotary_dims == 64 and ll.activation == "silu" and ll.kv_heads == h
        m = preset(f"mistral-1-{h}", 100)
        assert m.hidden == int(3.5 * d)
        assert m.kv_heads == (h // 4 if h % 4 == 0 else h // 2 if h % 2 == 0 else h)
    o = preset("gpt2-2-2", 100, mlp_ratio=1, tied=False, context=64)
    assert o.hidden == 128 and not o.tied and o.context == 64
    assert preset("llama-2-2", 100, mlp_ratio=0).has_mlp is False


@pytest.mark.parametrize(
    "name", ["gpt3-2-2", "gpt2-2", "gpt2-0-2", "llama-2-x", "", "gpt2-2-2-moe"]
)
def test_preset_errors(name):
    with pytest.raises(ValueError, match=r"unknown model preset .*gpt2-L-H, llama-L-H"):
        preset(name, 100)


def test_preset_bad_override_is_value_error():
    with pytest.raises(ValueError):
        preset("gpt2-2-2", 100, no_such_field=1)
    with pytest.raises(ValueError):
        preset("mistral-2-4", 100, n_kv_head=3)


# ---------------------------------------------------------------- parameter closed forms


@pytest.mark.parametrize(("L", "H", "V"), [(1, 1, 7), (2, 2, 50), (3, 4, 1000)])
def test_gpt2_param_closed_form(L, H, V):
    d = 64 * H
    per_layer_small = 3 * d + d + 4 * d + d + 2 * 2 * d  # qkv, out, fc, proj biases; 2 LNs
    body = 12 * L * d * d + L * per_layer_small + 2 * d
    counts = count_parameters_from_config(preset(f"gpt2-{L}-{H}", V))
    assert counts.total == body + V * d
    assert counts.non_embedding == body
    assert counts.P == counts.active == body + V * d
    used = count_parameters_from_config(preset(f"gpt2-{L}-{H}", V), n_used_tokens=V // 2)
    assert body + (V // 2) * d == used.P and used.total == counts.total


@pytest.mark.parametrize(("L", "H", "V"), [(1, 1, 7), (2, 3, 50)])
def test_llama_param_closed_form(L, H, V):
    d = 64 * H
    h = round(8 * d / 3)
    body = 4 * L * d * d + 3 * L * d * h + L * 2 * d + d
    counts = count_parameters_from_config(preset(f"llama-{L}-{H}", V))
    assert counts.total == body + 2 * V * d and counts.non_embedding == body
    used = count_parameters_from_config(preset(f"llama-{L}-{H}", V), n_used_tokens=5)
    assert body + 2 * 5 * d == used.P


@pytest.mark.parametrize(("L", "H"), [(1, 4), (2, 6), (1, 3)])
def test_mistral_param_closed_form(L, H):
    d, V = 64 * H, 33
    cfg = preset(f"mistral-{L}-{H}", V)
    kv, hd, h = cfg.kv_heads, cfg.head_dim, int(3.5 * d)
    attn = d * d + 2 * d * (kv * hd) + d * d
    body = L * (attn + 3 * d * h + 2 * d) + d
    assert count_parameters_from_config(cfg).total == body + 2 * V * d


@pytest.mark.parametrize(("ratio", "mlp_w", "mlp_b"), [(1, 2, 2), (0, 0, 0)])
def test_gpt2_mlp_width_ablation(ratio, mlp_w, mlp_b):
    L, H, V = 2, 2, 40
    d = 64 * H
    n_ln = 2 if ratio else 1
    per_layer_small = 3 * d + d + mlp_b * d + n_ln * 2 * d
    body = (4 + mlp_w) * L * d * d + L * per_layer_small + 2 * d
    counts = count_parameters_from_config(preset(f"gpt2-{L}-{H}", V, mlp_ratio=ratio))
    assert counts.total == body + V * d


@pytest.mark.parametrize(
    "cfg",
    [
        preset("gpt2-2-2", 30),
        preset("llama-1-2", 30),
        preset("mistral-2-4", 30),
        preset("gpt2-1-1", 30, mlp_ratio=0, tied=False, norm_bias=False, bias=False),
    ],
)
def test_meta_count_matches_real_model(cfg):
    real = count_parameters(_model(cfg), n_used_tokens=11)
    assert real == count_parameters_from_config(cfg, n_used_tokens=11)
    with pytest.raises(ValueError):
        count_parameters_from_config(cfg, n_used_tokens=31)


def test_tying_and_init():
    tied, untied = _model(preset("gpt2-2-2", 30)), _model(preset("llama-2-2", 30))
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.lm_head.weight is not untied.wte.weight and untied.lm_head.bias is None
    big = _model(ModelConfig(n_layer=8, n_head=2, vocab_size=10))
    std = big.blocks[0].attn.proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert big.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert big.blocks[0].mlp.fc.bias.abs().sum() == 0


# ---------------------------------------------------------------- forward behaviour


@pytest.mark.parametrize("name", ["gpt2-2-2", "llama-2-2", "mistral-2-4"])
def test_causality(name):
    model = _model(preset(name, 20, context=16))
    idx = torch.randint(0, 20, (2, 12))
    t = 5
    other = idx.clone()
    other[:, t + 1 :] = torch.randint(0, 20, (2, 12 - t - 1))
    with torch.no_grad():
        a, b = model(idx), model(other)
    assert a.shape == (2, 12, 20) and a.dtype == torch.float32
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_longer_than_context_extends_rotary_cache():
    model = _model(preset("gpt2-1-1", 20, context=8))
    idx = torch.randint(0, 20, (1, 13))
    with torch.no_grad():
        long, short = model(idx), model(idx[:, :8])
    torch.testing.assert_close(long[:, :8], short)
    assert model.rope_cos.size(0) == 13


def test_bf16_autocast_forward():
    model = _model(preset("llama-1-1", 20))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randint(0, 20, (1, 6)))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def _manual_attention(attn, x, cfg):
    """Reference attention: explicit q/k/v per head, rotary, masked softmax, kv group h // rep."""
    B, T, _ = x.shape
    nh, nkv, hd = cfg.n_head, cfg.kv_heads, cfg.head_dim
    w, b = attn.qkv.weight, attn.qkv.bias
    qkv = x @ w.T + (0 if b is None else b)
    q = qkv[..., : nh * hd].view(B, T, nh, hd).transpose(1, 2)
    k = qkv[..., nh * hd : (nh + nkv) * hd].view(B, T, nkv, hd).transpose(1, 2)
    v = qkv[..., (nh + nkv) * hd :].view(B, T, nkv, hd).transpose(1, 2)
    cos, sin = rope_cache(T, cfg.rotary_dims, cfg.rope_base)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    heads = []
    for h in range(nh):
        g = h // (nh // nkv)
        s = q[:, h] @ k[:, g].transpose(-1, -2) / math.sqrt(hd)
        p = s.masked_fill(~mask, float("-inf")).softmax(-1)
        heads.append(p @ v[:, g])
    y = torch.stack(heads, dim=1).transpose(1, 2).reshape(B, T, nh * hd)
    return attn.proj(y)


@pytest.mark.parametrize("n_kv", [4, 2, 1])
def test_attention_matches_manual(n_kv):
    cfg = ModelConfig(n_layer=1, n_head=4, d_model=32, vocab_size=10, n_kv_head=n_kv)
    attn = _model(cfg).blocks[0].attn
    for p in attn.parameters():  # larger weights so attention is far from uniform
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 7, 32)
    cos, sin = rope_cache(7, cfg.rotary_dims, cfg.rope_base)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, cos, sin), _manual_attention(attn, x, cfg))


def test_gqa_equals_mha_with_repeated_kv_weights():
    kw = dict(n_layer=2, n_head=4, d_model=32, vocab_size=10)
    gqa = _model(ModelConfig(**kw, n_kv_head=2), seed=1)
    mha = _model(ModelConfig(**kw), seed=2)
    sd = gqa.state_dict()
    hd = 8

    def expand(t):  # rows [q | k (2 heads) | v (2 heads)] -> [q | k (4 heads) | v (4 heads)]
        q, k, v = t.split((4 * hd, 2 * hd, 2 * hd))

        def rep(z):
            return z.unflatten(0, (2, hd)).repeat_interleave(2, dim=0).flatten(0, 1)

        return torch.cat((q, rep(k), rep(v)))

    for key in [k for k in sd if ".attn.qkv." in k]:
        sd[key] = expand(sd[key])
    mha.load_state_dict(sd)
    idx = torch.randint(0, 10, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(gqa(idx), mha(idx))


# ---------------------------------------------------------------- rotary


def test_rotary_partial_norm_and_relative_position():
    hd, rot, T = 16, 4, 12
    cos, sin = rope_cache(T, rot, 10000.0)
    x = torch.randn(1, 1, T, hd)
    y = apply_rotary(x, cos, sin)
    torch.testing.assert_close(y[..., rot:], x[..., rot:])  # un-rotated dims pass through
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[..., 0, :], x[..., 0, :])  # position 0 is the identity
    assert not torch.allclose(y[..., 1:, :rot], x[..., 1:, :rot])
    # GPT-NeoX layout: dim i pairs with dim i + rot/2, frequency base^(-2i/rot), rotating
    # (x_i, x_{i+rot/2}) by +angle; e.g. e_1 at position p -> cos(p*0.01) e_1 + sin(p*0.01) e_3
    e = torch.zeros(1, 1, T, hd)
    e[..., 1] = 1.0
    r = apply_rotary(e, cos, sin)[0, 0]
    p = torch.arange(T).float() * 0.01
    torch.testing.assert_close(r[:, 1], p.cos())
    torch.testing.assert_close(r[:, 3], p.sin())
    torch.testing.assert_close(r[:, [0, 2]], torch.zeros(T, 2))
    # the same q and k placed at (m, n) and (m + s, n + s) give the same dot product
    q, k = torch.randn(hd), torch.randn(hd)

    def dot(m, n):
        qs = apply_rotary(q.expand(1, 1, T, hd), cos, sin)[0, 0, m]
        ks = apply_rotary(k.expand(1, 1, T, hd), cos, sin)[0, 0, n]
        return (qs @ ks).item()

    for m, n in [(3, 1), (5, 5), (2, 7)]:
        for s in (1, 4):
            assert dot(m, n) == pytest.approx(dot(m + s, n + s), rel=1e-4, abs=1e-5)
    assert dot(3, 1) != pytest.approx(dot(3, 2), rel=1e-3)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("name", ["gpt2-2-2", "llama-2-2", "mistral-2-4"])
def test_presets_train(name):
    V = 16
    model = _model(preset(name, V, context=16)).train()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, V, (4, 16), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(V), abs=0.3)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "configs" / "ablations").glob("*.yaml")), ids=str
)
def test_ablation_configs_train(path):
    """Every ablation file (the LLaMA->GPT2 path, GPT2 1/4 MLP, no MLP) builds and learns."""
    spec = yaml.safe_load(path.read_text())
    V = 16
    cfg = preset(
        spec["preset"], V, context=16, **{**spec["overrides"], "n_layer": 1, "d_model": 64}
    )
    model = _model(cfg).train()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, V, (4, 16), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(idx[:, :-1]).reshape(-1, V), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
