"""LoRA adapters for the extraction probe (paper Parameter 3: rank r' on the embedding, rank r on
the attention's query and value maps), written for `kcap.models.GPT`; no `peft` needed.

`add_lora(model, embedding_rank, qv_rank)` freezes every weight of ``model`` and wraps its
token embedding and each block's fused ``qkv`` projection in place; only the adapters train.
At initialisation every adapter adds exactly zero, so the adapted model computes what the
model did (tested). As in ``peft``: a linear adapter adds ``scale · B A x`` with A
Kaiming-uniform and B zero, an embedding adapter ``scale · A[token] B`` with A zero and B
standard normal; ``scale`` = alpha / rank with alpha = rank (1). The query and value maps are
adapted separately (the key map and the output projection are not), read as their rows of the
fused [q | k | v] projection. A tied output head keeps using the frozen embedding matrix (the
embedding adapter changes the input lookup only, as ``peft`` does).

Ranks above what a matrix can hold (the model width) are capped: `LoraRanks` says which ranks
were used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LoraRanks:
    """The ranks actually used (requested ranks capped at the matrices' sizes)."""

    embedding: int
    qv: int


class LoRAEmbedding(nn.Module):
    """``base(idx) + scale · A[idx] B``: a rank-r update of an embedding table."""

    def __init__(self, base: nn.Embedding, rank: int, scale: float = 1.0):
        super().__init__()
        self.base = base
        self.scale = scale
        vocab, dim = base.weight.shape
        self.lora_A = nn.Parameter(torch.zeros(vocab, rank, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.randn(rank, dim, device=base.weight.device))

    @property
    def weight(self) -> torch.Tensor:  # what code reading ``model.wte.weight`` expects
        return self.base.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        delta = nn.functional.embedding(idx, self.lora_A) @ self.lora_B
        return self.base(idx) + self.scale * delta.to(self.base.weight.dtype)


class LoRAColumns(nn.Module):
    """``base(x)`` plus a rank-r update on each of some output column ranges of a linear map
    (the query and value parts of a fused qkv projection); the other outputs are unchanged."""

    def __init__(self, base: nn.Linear, rank: int, ranges: list[tuple[int, int]], scale=1.0):
        super().__init__()
        self.base = base
        self.scale = scale
        self.ranges = sorted(ranges)
        device = base.weight.device
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        for start, stop in self.ranges:
            a = torch.empty(rank, base.in_features, device=device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.lora_A.append(nn.Parameter(a))
            self.lora_B.append(nn.Parameter(torch.zeros(stop - start, rank, device=device)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        parts, at = [], 0
        for (start, stop), a, b in zip(self.ranges, self.lora_A, self.lora_B, strict=True):
            if start > at:
                parts.append(y.new_zeros(*y.shape[:-1], start - at))
            parts.append((self.scale * ((x @ a.t()) @ b.t())).to(y.dtype))
            at = stop
        if at < y.size(-1):
            parts.append(y.new_zeros(*y.shape[:-1], y.size(-1) - at))
        return y + torch.cat(parts, dim=-1)


def add_lora(model: nn.Module, embedding_rank: int, qv_rank: int) -> LoraRanks:
    """Freeze ``model`` (a `kcap.models.GPT`) and wrap its embedding (rank ``embedding_rank``;
    0: not adapted) and every block's query and value maps (rank ``qv_rank``; 0: not adapted)
    in LoRA adapters, in place. Returns the ranks used (capped at the model width)."""
    for p in model.parameters():
        p.requires_grad_(False)
    d = model.cfg.d_model
    r_emb, r_qv = min(embedding_rank, d), min(qv_rank, d)
    if r_emb > 0:
        model.wte = LoRAEmbedding(model.wte, r_emb)
    if r_qv > 0:
        for block in model.blocks:
            attn = block.attn
            q = attn.n_head * attn.head_dim
            kv = attn.n_kv_head * attn.head_dim
            attn.qkv = LoRAColumns(attn.qkv, r_qv, [(0, q), (q + kv, q + 2 * kv)])
    return LoraRanks(r_emb, r_qv)


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (what the optimizer trains)."""
    return [p for name, p in model.named_parameters() if "lora_" in name]
