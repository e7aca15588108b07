"""Parameter accounting of SPEC §4: total, P (the paper's count), non-embedding and active.

P counts every trainable parameter once except the embedding and output rows of vocabulary
tokens that never occur in the dataset; tied weights count once, untied input and output
matrices both count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kcap.models.config import ModelConfig
from kcap.models.gpt import GPT


@dataclass(frozen=True)
class ParamCounts:
    """total: every trainable parameter once; P: the capacity-ratio denominator (used token
    rows only); non_embedding: total without embedding/head matrices; active: P per token."""

    total: int
    P: int
    non_embedding: int
    active: int


def _inactive_per_token(model: nn.Module) -> int:
    """Parameters a single token does not use (unselected experts). Zero for dense models;
    a mixture-of-experts layer reports its own through an `inactive_parameters()` method."""
    return sum(
        m.inactive_parameters() for m in model.modules() if hasattr(m, "inactive_parameters")
    )


def count_parameters(model: GPT, n_used_tokens: int | None = None) -> ParamCounts:
    """Count the parameters of `model`; `n_used_tokens` = vocabulary tokens occurring in the
    dataset (default: the whole vocabulary)."""
    cfg = model.cfg
    n_used = cfg.vocab_size if n_used_tokens is None else n_used_tokens
    if not 0 <= n_used <= cfg.vocab_size:
        raise ValueError(f"n_used_tokens={n_used} must be in [0, vocab_size={cfg.vocab_size}]")
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)  # shared counted once
    tied = model.lm_head.weight is model.wte.weight
    n_matrices = 1 if tied else 2
    non_embedding = total - n_matrices * model.wte.weight.numel()
    P = non_embedding + n_matrices * n_used * cfg.d_model
    active = P - _inactive_per_token(model)
    return ParamCounts(total=total, P=P, non_embedding=non_embedding, active=active)


def count_parameters_from_config(cfg: ModelConfig, n_used_tokens: int | None = None) -> ParamCounts:
    """Count without allocating memory: the model is built on the `meta` device."""
    with torch.device("meta"):
        model = GPT(cfg)
    return count_parameters(model, n_used_tokens)
