"""PackedGPT: K decoders of one shape trained as one model, each with its own weights.

A lab grid is dozens of models of 15k-150k parameters; one of them keeps a CPU core busy with
per-op overhead and a GPU nearly idle. Packing K models of the same `ModelConfig` into one
module with a leading model dimension turns every matmul into one batched matmul (`bmm`), folds
the model dimension into the attention batch, and lets one optimizer step update all K.

The models never interact: model k's logits depend only on model k's weights and inputs, so its
gradients are those of the separate model (tests/test_packed.py checks the logits, gradients and
whole training runs against separate `GPT`s).

Memory layout: all weights live in one ``(K, S)`` buffer, ``flat`` (row k = model k's S
parameters in `GPT.named_parameters` order), and each parameter is a view of its columns, with
its gradient a view of the same columns of ``flat_grad``. The optimizer (`StackedAdamW`) and the
per-model gradient clipping are then a handful of whole-buffer operations with per-row learning
rates, whatever the depth. `member_state` and `load_member` move one model in and out as a
`GPT` state dict (same names and shapes), which is what makes a packed model's checkpoint a
plain run's checkpoint.

Dense models only: a mixture of experts routes each model's tokens differently (packs refuse
``n_experts > 0``).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from kcap.models.config import ModelConfig
from kcap.models.gpt import (
    GPT,
    _fast,
    _SplitRotary,
    head_product,
    rope_cache,
    rotary_tables,
    split_rotary_reference,
)
from kcap.models.loss import summed_nll

__all__ = ["PackedGPT", "check_packable"]

# Gradients are views of one (K, S) buffer on purpose (see the module docstring): autograd adds
# into them in place, and warns that they are not laid out as dense tensors; `backward` hushes it.
_LAYOUT_WARNING = "grad and param do not obey the gradient layout contract"


def check_packable(cfg: ModelConfig) -> None:
    """Raise ValueError when ``cfg`` cannot be packed (mixtures of experts)."""
    if cfg.is_moe:
        raise ValueError("packed training needs a dense model (n_experts = 0)")


class PackedLinear(nn.Module):
    """K linear maps: x (K, N, in) -> (K, N, out); weight (K, out, in) as in nn.Linear."""

    def __init__(self, k: int, d_in: int, d_out: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, d_out, d_in))
        self.bias = nn.Parameter(torch.empty(k, d_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.transpose(1, 2)
        if self.bias is None:
            return torch.bmm(x, w)
        return torch.baddbmm(self.bias.unsqueeze(1), x, w)


class PackedNorm(nn.Module):
    """K LayerNorms (optionally with bias) or RMSNorms over the last dim, in float32."""

    def __init__(self, k: int, cfg: ModelConfig):
        super().__init__()
        self.rms = cfg.norm == "rmsnorm"
        self.eps = cfg.norm_eps
        self.weight = nn.Parameter(torch.empty(k, cfg.d_model))
        has_bias = not self.rms and cfg.norm_bias
        self.bias = nn.Parameter(torch.empty(k, cfg.d_model)) if has_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (K, N, d)
        xf = x.float()
        if self.rms:
            y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        else:
            y = F.layer_norm(xf, (x.size(-1),), None, None, self.eps)
        if self.bias is None:
            return (y * self.weight.float().unsqueeze(1)).to(x.dtype)
        return torch.addcmul(
            self.bias.float().unsqueeze(1), y, self.weight.float().unsqueeze(1)
        ).to(x.dtype)


class PackedAttention(nn.Module):
    """K causal self-attentions; the model dimension is folded into the attention batch."""

    def __init__(self, k: int, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        qkv_out = (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim
        self.qkv = PackedLinear(k, cfg.d_model, qkv_out, cfg.bias)
        self.proj = PackedLinear(k, cfg.d_model, cfg.d_model, cfg.bias)
        self._tables: tuple[torch.Tensor, ...] = ()  # (cos, sin, *rotary_tables(cos, sin))

    def forward(self, x: torch.Tensor, batch: int, cos: torch.Tensor, sin: torch.Tensor):
        K, N, C = x.shape  # N = batch * T
        T, nh, nkv = N // batch, self.n_head, self.n_kv_head
        qkv = self.qkv(x).view(K * batch, T, -1)  # as K * batch sequences: GPT's rotary applies
        if _fast("rotary", qkv) and cos.dtype == torch.float32:
            t = self._tables
            if not t or t[0] is not cos or t[1] is not sin:
                t = self._tables = (cos, sin, *rotary_tables(cos, sin, nh + nkv, self.head_dim))
            q, k, v = _SplitRotary.apply(qkv, *t[2:], nh, nkv)
        else:
            q, k, v = split_rotary_reference(qkv, cos, sin, nh, nkv)
        if nkv != nh:
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(K, N, C))


class PackedMLP(nn.Module):
    """K MLPs, standard (fc, proj) or gated (gate, up, down), named as in `GPT`."""

    def __init__(self, k: int, cfg: ModelConfig):
        super().__init__()
        d, h, b = cfg.d_model, cfg.hidden, cfg.bias
        self.gated = cfg.mlp_gated
        if self.gated:
            self.gate = PackedLinear(k, d, h, b)
            self.up = PackedLinear(k, d, h, b)
            self.down = PackedLinear(k, h, d, b)
        else:
            self.fc = PackedLinear(k, d, h, b)
            self.proj = PackedLinear(k, h, d, b)
        self.act = nn.GELU() if cfg.activation == "gelu" else nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.down(self.act(self.gate(x)) * self.up(x))
        return self.proj(self.act(self.fc(x)))


class PackedBlock(nn.Module):
    def __init__(self, k: int, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = PackedNorm(k, cfg)
        self.attn = PackedAttention(k, cfg)
        self.ln_2 = PackedNorm(k, cfg) if cfg.has_mlp else None
        self.mlp = PackedMLP(k, cfg) if cfg.has_mlp else None

    def forward(self, x, batch, cos, sin):
        x = x + self.attn(self.ln_1(x), batch, cos, sin)
        if self.mlp is not None:
            x = x + self.mlp(self.ln_2(x))
        return x


class PackedGPT(nn.Module):
    """K `GPT`s of config ``cfg``: ``forward(idx[K, B, T]) -> float logits[K, B, T, vocab]``.

    Parameter names and per-model shapes are those of `GPT` (with a leading K). Weights start
    at zero: load each model with `load_member` (e.g. from a `GPT` built under its own seed).
    """

    def __init__(self, cfg: ModelConfig, k: int):
        super().__init__()
        check_packable(cfg)
        self.cfg, self.k = cfg, k
        self.wte = nn.Module()
        self.wte.weight = nn.Parameter(torch.empty(k, cfg.vocab_size, cfg.d_model))
        self.blocks = nn.ModuleList(PackedBlock(k, cfg) for _ in range(cfg.n_layer))
        self.ln_f = PackedNorm(k, cfg)
        self.lm_head: nn.Module | None = None
        if not cfg.tied:
            self.lm_head = nn.Module()
            self.lm_head.weight = nn.Parameter(torch.empty(k, cfg.vocab_size, cfg.d_model))
        cos, sin = rope_cache(cfg.context, cfg.rotary_dims, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._rope_views: tuple[torch.Tensor, ...] = ()
        self.names = [name for name, _ in self.named_parameters()]
        shapes = [p.shape[1:] for p in self.parameters()]
        self.sizes = [s.numel() for s in shapes]
        self.flat = torch.zeros(k, sum(self.sizes))
        self.flat_grad = torch.zeros_like(self.flat)
        self._bind()
        with torch.device("meta"):  # GPT's names, without allocating its weights
            reference = [n for n, _ in GPT(cfg).named_parameters()]
        if self.names != reference:
            raise AssertionError("PackedGPT parameters must follow GPT's names and order")

    # ------------------------------------------------------------------ the (K, S) buffer
    def _bind(self) -> None:
        """Make every parameter (and its gradient) a view of its columns of flat (flat_grad)."""
        offset = 0
        for name, size in zip(self.names, self.sizes, strict=True):
            module_name, _, attr = name.rpartition(".")
            module = self.get_submodule(module_name)
            shape = (self.k, *getattr(module, attr).shape[1:])
            param = nn.Parameter(self.flat[:, offset : offset + size].view(shape))
            param.grad = self.flat_grad[:, offset : offset + size].view(shape)
            setattr(module, attr, param)
            offset += size

    def to(self, *args, **kwargs):  # nn.Module.to, keeping the views of flat
        moved = self.flat.to(*args, **kwargs)
        if moved is not self.flat:
            self.flat, self.flat_grad = moved, torch.zeros_like(moved)
            self._bind()
        return super().to(*args, **kwargs)

    def keep(self, rows: list[int]) -> None:
        """Keep only the models ``rows`` (in that order): a finished model leaves the pack."""
        index = torch.tensor(rows, device=self.flat.device)
        self.flat = self.flat.index_select(0, index)
        self.flat_grad = torch.zeros_like(self.flat)
        self.k = len(rows)
        self._bind()

    @staticmethod
    def backward(loss: torch.Tensor) -> None:
        """``loss.backward()``, the gradients landing in ``flat_grad``."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LAYOUT_WARNING)
            loss.backward()

    def zero_grad(self, set_to_none: bool = False) -> None:  # the views stay bound
        self.flat_grad.zero_()

    def decay_mask(self) -> torch.Tensor:
        """(S,) 1.0 on the columns of matrices (weight decay applies), 0.0 on vectors: the same
        split as `kcap.training.schedule.make_optimizer`."""
        parts = [
            torch.full((size,), float(p.dim() >= 3))  # (K, ...) of a >= 2-dim GPT parameter
            for p, size in zip(self.parameters(), self.sizes, strict=True)
        ]
        return torch.cat(parts).to(self.flat.device)

    # ------------------------------------------------------------------ members in and out
    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights as a `GPT` state dict (copies), the tied head included."""
        state = {n: p[k].detach().clone() for n, p in self.named_parameters()}
        if self.cfg.tied:
            state["lm_head.weight"] = state["wte.weight"]
        return state

    def load_member(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Set model k's weights from a `GPT` state dict."""
        with torch.no_grad():
            for n, p in self.named_parameters():
                p[k].copy_(state[n])

    def columns(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-parameter tensors of one model (a `GPT`-named dict) as one (S,) row of flat."""
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def split(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """The inverse of `columns`: an (S,) row cut into `GPT`-shaped tensors by name."""
        out, offset = {}, 0
        for (n, p), size in zip(self.named_parameters(), self.sizes, strict=True):
            out[n] = row[offset : offset + size].view(p.shape[1:])
            offset += size
        return out

    # ------------------------------------------------------------------ forward
    def _rope(self, T: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.rope_cos, self.rope_sin
        if cos.size(0) < T or cos.dtype != torch.float32 or cos.device != device:
            length = max(T, self.cfg.context)
            cos, sin = rope_cache(length, self.cfg.rotary_dims, self.cfg.rope_base, device)
            self.rope_cos, self.rope_sin = cos, sin
        views = self._rope_views  # the same tensors each forward: layers key caches on them
        if not views or views[0] is not cos or views[1] is not sin or views[2].size(0) != T:
            views = self._rope_views = (cos, sin, cos[:T], sin[:T])
        return views[2], views[3]

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """The final-norm hidden states (K, B * T, d) of token ids (K, B, T)."""
        K, B, T = idx.shape
        cos, sin = self._rope(T, idx.device)
        models = torch.arange(K, device=idx.device).view(K, 1, 1)
        x = self.wte.weight[models, idx].view(K, B * T, -1)  # model k's rows for its tokens
        for block in self.blocks:
            x = block(x, B, cos, sin)
        return self.ln_f(x)

    def _head(self) -> torch.Tensor:
        return self.wte.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        K, B, T = idx.shape
        logits = torch.bmm(self.hidden(idx), self._head().transpose(1, 2))
        return logits.view(K, B, T, -1).float()

    def nll(self, idx: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        """Each model's summed next-token loss (K,) over its targets (K, B, T) that are not
        ``ignore_index``. The same as cross-entropy over `forward`'s logits, but the head and
        the loss run model by model: K x B x T x vocab logits at once overflow the CPU's caches
        (measured 1.5x slower than K separate heads at d 32, vocab 1024)."""
        # unbind, not h[k]: the gradient of K selects would be K zero-filled copies of h
        hs, heads, ys = self.hidden(idx).unbind(0), self._head().unbind(0), targets.unbind(0)
        losses = [
            summed_nll(head_product(h, head).float(), y.flatten(), ignore_index)
            for h, head, y in zip(hs, heads, ys, strict=True)
        ]
        return torch.stack(losses)
