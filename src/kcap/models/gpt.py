"""GPT: one decoder-only transformer built entirely from a `ModelConfig`.

In the style of nanoGPT's model.py: token embedding (no learned positions), `n_layer` blocks of
pre-norm causal self-attention with GPT-NeoX rotary embedding and a pre-norm MLP, a final norm
and a linear head (optionally tied to the embedding). Norms compute in float32 so bf16 autocast
is safe; attention runs through `scaled_dot_product_attention`. With `cfg.n_experts > 0` every
block's MLP is a mixture of experts (`kcap.models.moe.MoEMLP`); its load-balancing loss is read
through `GPT.aux_loss()` after each forward.
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


class LayerNorm(nn.Module):
    """LayerNorm with optional bias, computed in float32."""

    def __init__(self, dim: int, eps: float, bias: bool):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


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


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with rotary positions."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        # fused projection laid out as [q: n_head heads | k: n_kv_head heads | v: n_kv_head heads]
        qkv_out = (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, qkv_out, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hd, nh, nkv = self.head_dim, self.n_head, self.n_kv_head
        q, k, v = self.qkv(x).split((nh * hd, nkv * hd, nkv * hd), dim=-1)
        q = q.view(B, T, nh, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, nkv, hd).transpose(1, 2)
        v = v.view(B, T, nkv, hd).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
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
        """cos/sin for positions 0..T-1; rebuilt (float32) if too short or cast by .to()."""
        cos, sin = self.rope_cos, self.rope_sin
        if cos.size(0) < T or cos.dtype != torch.float32 or cos.device != device:
            length = max(T, self.cfg.context)
            cos, sin = rope_cache(length, self.cfg.rotary_dims, self.cfg.rope_base, device)
            self.rope_cos, self.rope_sin = cos, sin
        return cos[:T], sin[:T]

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
        return self.lm_head(self.ln_f(x)).float()
