"""GPT: one decoder-only transformer built entirely from a `ModelConfig`.

In the style of nanoGPT's model.py: token embedding (no learned positions), `n_layer` blocks of
pre-norm causal self-attention with GPT-NeoX rotary embedding and a pre-norm MLP, a final norm
and a linear head (optionally tied to the embedding). Norms compute in float32 so bf16 autocast
is safe; attention runs through `scaled_dot_product_attention`. With `cfg.n_experts > 0` every
block's MLP is a mixture of experts (`kcap.models.moe.MoEMLP`); its load-balancing loss is read
through `GPT.aux_loss()` after each forward.

Float32 tensors take fast paths that compute the same function as the composite code to
float32 rounding, in fewer kernels and autograd nodes (issue 13, tests/test_speed_paths.py): the
rotary embedding of q and k together in three row-long kernels (`_SplitRotary`), RMSNorm with a
hand-written backward (`_RMSNorm`) and a narrow output head whose weight gradient is taken in
the orientation BLAS runs faster (`_NarrowHead`); the loss has one too (`kcap.models.loss`).
Other dtypes (bf16 autocast, float64) and torch.compile keep the composite path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kcap.models.config import ModelConfig
from kcap.models.moe import MoEMLP

# Output projections that write into the residual stream; GPT-2 scales their init by
# 1/sqrt(2 * n_layer).
RESIDUAL_OUT = ("attn.proj.weight", "mlp.proj.weight", "mlp.down.weight", "mlp.w_out")

# Float32 fast paths (issue 13): each computes the same function as the composite code it
# replaces, to float32 rounding (tests/test_speed_paths.py), in fewer kernels and autograd
# nodes. Switched off only to measure what each buys (benchmarks/bench_hf.py --ablate) and to
# test them against the reference paths, which other dtypes (bf16 autocast, float64) take.
FAST_PATHS = {"rotary": True, "norms": True, "head": True, "loss": True}
#: The widest head input `_NarrowHead` takes (from d = 128 on it is not faster).
NARROW_HEAD_MAX_D = 64


class LayerNorm(nn.Module):
    """LayerNorm with optional bias, computed in float32."""

    def __init__(self, dim: int, eps: float, bias: bool):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast("norms", x) and self.weight.dtype == torch.float32:
            return F.layer_norm(x, (x.size(-1),), self.weight, self.bias, self.eps)
        bias = None if self.bias is None else self.bias.float()
        y = F.layer_norm(x.float(), (x.size(-1),), self.weight.float(), bias, self.eps)
        return y.to(x.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square norm (no bias, no centering), computed in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fast("norms", x) and self.weight.dtype == torch.float32:
            return _RMSNorm.apply(x, self.weight, self.eps)
        return rms_norm_reference(x, self.weight, self.eps)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as composite autograd ops, in float32 whatever the input dtype."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.float()).to(x.dtype)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, cfg.norm_eps)
    return LayerNorm(cfg.d_model, cfg.norm_eps, cfg.norm_bias)


def rope_cache(
    length: int, rot_dims: int, base: float, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 cos/sin tables of shape (length, rot_dims), GPT-NeoX (rotate_half) layout."""
    inv_freq = 1.0 / base ** (torch.arange(0, rot_dims, 2, device=device).float() / rot_dims)
    t = torch.arange(length, device=device).float()
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.size(-1) dims of each head of x (B, nh, T, hd); the rest pass."""
    rot = cos.size(-1)
    xr, xp = x[..., :rot].float(), x[..., rot:]
    xr = xr * cos + rotate_half(xr) * sin
    return torch.cat((xr.to(x.dtype), xp), dim=-1)


def split_rotary_reference(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, nh: int, nkv: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (B, heads, T, hd) of a fused projection output (B, T, (nh + 2 nkv) * hd), laid
    out [q heads | k heads | v heads], with q and k rotated (`apply_rotary`)."""
    B, T, _ = qkv.shape
    hd = qkv.size(-1) // (nh + 2 * nkv)
    q, k, v = qkv.split((nh * hd, nkv * hd, nkv * hd), dim=-1)
    q = q.view(B, T, nh, hd).transpose(1, 2)  # (B, nh, T, hd)
    k = k.view(B, T, nkv, hd).transpose(1, 2)
    v = v.view(B, T, nkv, hd).transpose(1, 2)
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with rotary positions."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        # fused projection laid out as [q: n_head heads | k: n_kv_head heads | v: n_kv_head heads]
        qkv_out = (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, qkv_out, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self._tables: tuple[torch.Tensor, ...] = ()  # (cos, sin, *rotary_tables(cos, sin))

    def _rotary_tables(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`rotary_tables` for q's and k's heads, kept while the same cos/sin tensors come
        (`GPT._rope` hands the same ones to every layer and every forward)."""
        t = self._tables
        if not t or t[0] is not cos or t[1] is not sin:
            t = (cos, sin, *rotary_tables(cos, sin, self.n_head + self.n_kv_head, self.head_dim))
            self._tables = t
        return t[2:]

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        nh, nkv = self.n_head, self.n_kv_head
        qkv = self.qkv(x)
        if _fast("rotary", qkv) and cos.dtype == torch.float32:
            q, k, v = _SplitRotary.apply(qkv, *self._rotary_tables(cos, sin), nh, nkv)
        else:
            q, k, v = split_rotary_reference(qkv, cos, sin, nh, nkv)
        if nkv != nh:  # query head i uses kv head i // (nh // nkv), as in HF repeat_kv
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    """Standard MLP d -> hidden -> d with GELU or SiLU."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.hidden, bias=cfg.bias)
        self.proj = nn.Linear(cfg.hidden, cfg.d_model, bias=cfg.bias)
        self.act = nn.GELU() if cfg.activation == "gelu" else nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class GatedMLP(nn.Module):
    """Gated MLP (SwiGLU when SiLU): down(act(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(cfg.d_model, cfg.hidden, bias=cfg.bias)
        self.up = nn.Linear(cfg.d_model, cfg.hidden, bias=cfg.bias)
        self.down = nn.Linear(cfg.hidden, cfg.d_model, bias=cfg.bias)
        self.act = nn.GELU() if cfg.activation == "gelu" else nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)) when there is an MLP."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2: nn.Module | None = None
        self.mlp: nn.Module | None = None
        if cfg.has_mlp:
            self.ln_2 = make_norm(cfg)
            if cfg.is_moe:
                self.mlp = MoEMLP(cfg)
            else:
                self.mlp = GatedMLP(cfg) if cfg.mlp_gated else MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cos, sin)
        if self.mlp is not None:
            x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """Decoder-only transformer; `forward(idx[B, T]) -> float logits[B, T, vocab_size]`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tied:
            self.lm_head.weight = self.wte.weight
        cos, sin = rope_cache(cfg.context, cfg.rotary_dims, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._rope_views: tuple[torch.Tensor, ...] = ()  # (rope_cos, rope_sin, cos[:T], sin[:T])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, init_std) weights, zero biases, residual outputs / sqrt(2 n_layer)."""
        std = self.cfg.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, MoEMLP):
                module.reset_parameters(std)
        for name, p in self.named_parameters():
            if name.endswith(RESIDUAL_OUT):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * self.cfg.n_layer))

    def _rope(self, T: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions 0..T-1; rebuilt (float32) if too short or cast by .to(). The
        same two tensors while T and the buffers stay, so layers can key caches on them."""
        cos, sin = self.rope_cos, self.rope_sin
        if cos.size(0) < T or cos.dtype != torch.float32 or cos.device != device:
            length = max(T, self.cfg.context)
            cos, sin = rope_cache(length, self.cfg.rotary_dims, self.cfg.rope_base, device)
            self.rope_cos, self.rope_sin = cos, sin
        views = self._rope_views
        if not views or views[0] is not cos or views[1] is not sin or views[2].size(0) != T:
            views = self._rope_views = (cos, sin, cos[:T], sin[:T])
        return views[2], views[3]

    def moe_layers(self) -> list[MoEMLP]:
        """The mixture-of-experts MLPs, one per block (empty for a dense model)."""
        return [b.mlp for b in self.blocks if isinstance(b.mlp, MoEMLP)]

    def aux_loss(self) -> torch.Tensor:
        """cfg.aux_loss_coef * the sum over layers of the Switch load-balancing losses of the
        last forward; add it to the training loss. A zero tensor for dense models."""
        losses = [m.aux_loss for m in self.moe_layers() if m.aux_loss is not None]
        if not losses:
            return torch.zeros((), device=self.wte.weight.device)
        return self.cfg.aux_loss_coef * torch.stack(losses).sum()

    def moe_metrics(self) -> dict[str, float]:
        """Per-layer values of the last forward for logging: `moe/aux/<layer>` (balancing
        loss, 1 = perfectly balanced, unscaled) and `moe/dropped/<layer>` (fraction of
        token-slots over capacity). Empty for dense models; synchronises with the device."""
        out: dict[str, float] = {}
        for i, m in enumerate(self.moe_layers()):
            if m.aux_loss is not None and m.drop_fraction is not None:
                out[f"moe/aux/{i}"] = float(m.aux_loss.detach())
                out[f"moe/dropped/{i}"] = float(m.drop_fraction)
        return out

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        cos, sin = self._rope(idx.size(1), idx.device)
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        x = self.ln_f(x)
        head = self.lm_head
        if _fast("head", x) and _narrow_head(head):
            return _NarrowHead.apply(x, head.weight)
        return head(x).float()


# ---------------------------------------------------------------- float32 fast paths (issue 13)


def _fast(path: str, x: torch.Tensor) -> bool:
    """Whether fast path ``path`` may take float32 ``x``: never under autocast (the composite
    path keeps its casts) or while torch.compile traces (it fuses the composite path better)."""
    return (
        FAST_PATHS[path]
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled(x.device.type)
        and not torch.compiler.is_compiling()
    )


class _RMSNorm(torch.autograd.Function):
    """`rms_norm_reference` for float32 tensors, the same forward ops, with a hand-written
    backward: 7 kernels instead of autograd's ~20 through pow, mean, rsqrt and two products."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        xhat = x * r
        ctx.save_for_backward(xhat, r, weight)
        return xhat * weight

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        xhat, r, weight = ctx.saved_tensors
        gx = gw = None
        if ctx.needs_input_grad[1]:
            gw = (g * xhat).flatten(0, -2).sum(0)
        if ctx.needs_input_grad[0]:
            # d/dx of x * r * w: r * (gw' - xhat * mean(gw' * xhat)), with gw' = g * w
            gxhat = g * weight
            dot = (gxhat * xhat).mean(-1, keepdim=True)
            gx = gxhat.addcmul_(xhat, dot, value=-1).mul_(r)
        return gx, gw, None


def rotary_tables(
    cos: torch.Tensor, sin: torch.Tensor, heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotary embedding as ``y = x * c + x[..., perm] * s`` over ``heads`` heads laid side by
    side (x: (..., T, heads * head_dim)): c, s (T, heads * head_dim), the index perm that swaps
    the halves of each head's rotated dims, and sb = s[..., perm], the backward's table
    (``dx = dy * c + dy[..., perm] * sb``). Equal to `apply_rotary` for any cos/sin tables:
    c is cos on the rotated dims and 1 elsewhere, s is (-sin | sin) on the two halves and 0
    elsewhere."""
    T, rot = cos.shape
    half = rot // 2
    c = torch.ones(T, head_dim, dtype=cos.dtype, device=cos.device)
    s = torch.zeros_like(c)
    c[:, :rot] = cos
    s[:, :half] = -sin[:, :half]
    s[:, half:rot] = sin[:, half:]
    idx = torch.arange(head_dim, device=cos.device)
    idx[:half] += half
    idx[half:rot] -= half
    perm = (idx + head_dim * torch.arange(heads, device=cos.device)[:, None]).flatten()
    c, s = c.repeat(1, heads), s.repeat(1, heads)
    return c, s, perm, s[:, perm]


class _SplitRotary(torch.autograd.Function):
    """`split_rotary_reference` for float32 tensors in a few kernels over whole rows each way.

    q and k are rotated together as ``x * c + x[..., perm] * s`` (`rotary_tables`): three
    kernels, where `apply_rotary` runs some ten per tensor over head_dim-long (or shorter) rows;
    v is a view of the input. The backward (`_unrotate`) writes q's, k's and v's gradients side
    by side with one `cat` and rotates the q and k part back in place: no zero-filled slices to
    add up, as autograd's split, view and cat make."""

    @staticmethod
    def forward(ctx, qkv, c, s, perm, sb, nh: int, nkv: int):
        ctx.save_for_backward(c, perm, sb)
        ctx.heads = (nh, nkv, nkv)
        return _rotate(qkv, c, s, perm, nh, nkv)

    @staticmethod
    def backward(ctx, gq, gk, gv):
        c, perm, sb = ctx.saved_tensors
        return _unrotate((gq, gk, gv), ctx.heads, c, perm, sb), None, None, None, None, None, None


def _rotate(qkv, c, s, perm, nh: int, nkv: int):
    """q, k (rotated) and v (a view), each (B, heads, T, hd), of qkv (B, T, width)."""
    B, T, width = qkv.shape
    hd = width // (nh + 2 * nkv)
    nqk = c.size(-1)  # (nh + nkv) * hd
    x = qkv[..., :nqk]
    r = torch.addcmul(x * c, _swap(x, perm), s).view(B, T, nh + nkv, hd)
    v = qkv[..., nqk:].view(B, T, nkv, hd)
    return r[:, :, :nh].transpose(1, 2), r[:, :, nh:].transpose(1, 2), v.transpose(1, 2)


def _unrotate(grads, heads, c, perm, sb) -> torch.Tensor:
    """The gradient (B, T, width) of `_rotate`'s input from those of q, k and v."""
    some = next(g for g in grads if g is not None)
    B, _, T, hd = some.shape
    g = torch.cat(  # (B, T, heads, hd): q's, k's and v's gradients side by side
        [
            (some.new_zeros(B, n, T, hd) if t is None else t).transpose(1, 2)
            for t, n in zip(grads, heads, strict=True)
        ],
        dim=2,
    ).view(B, T, -1)
    gqk = g[..., : c.size(-1)]
    sw = _swap(gqk, perm)
    gqk.mul_(c).addcmul_(sw, sb)
    return g


def _swap(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x[..., perm] for x (B, T, n): index_select on a 2-d view (5x faster than on 3-d)."""
    return x.flatten(0, 1).index_select(1, perm).view(x.shape)


def head_product(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` for a vocabulary head's raw weight (as `PackedGPT` holds them), through
    `_NarrowHead` where `GPT.forward` would take it."""
    if _fast("head", x) and weight.size(1) <= NARROW_HEAD_MAX_D:
        return _NarrowHead.apply(x, weight)
    return x @ weight.T


def _narrow_head(m: nn.Module) -> bool:
    """An `nn.Linear` head with at most 64 inputs, no bias and no hooks: its call is exactly
    ``x @ weight.T``, which `_NarrowHead` computes. (A wrapper, such as a LoRA layer, is another
    type and keeps its own forward.)"""
    return (
        type(m) is nn.Linear
        and m.bias is None
        and m.in_features <= NARROW_HEAD_MAX_D
        and not (m._forward_hooks or m._forward_pre_hooks)
    )


class _NarrowHead(torch.autograd.Function):
    """``x @ weight.T`` for a narrow input (d <= 64) and a wide output (the vocabulary), whose
    weight gradient is computed as ``(x.T @ g).T``: on this project's CPU, MKL is 1.1-1.6x
    faster at (d, N) x (N, vocab) than at the (vocab, N) x (N, d) product autograd takes (the
    same sums; bitwise the same gradient here). From d = 128 on, it is not faster."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.mm(x.reshape(-1, x.size(-1)), weight.t()).view(*x.shape[:-1], -1)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, weight = ctx.saved_tensors
        g2 = g.reshape(-1, g.size(-1))
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.mm(g2, weight).view(x.shape)
        if ctx.needs_input_grad[1]:
            gw = torch.mm(x.reshape(-1, x.size(-1)).t(), g2).t()
        return gx, gw
