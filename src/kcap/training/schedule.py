"""AdamW with weight decay on matrices only, and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch

from kcap.training.config import TrainingSpec


def make_optimizer(
    model: torch.nn.Module, spec: TrainingSpec, *, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW (SPEC §6): decay on parameters with >= 2 dims, none on biases and norm gains.
    ``fused``: the fused CUDA kernel (one launch for all parameters), used when every parameter
    is on a CUDA device; otherwise (a CPU) the default implementation, as always."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    extra = {}
    if fused and all(p.is_cuda for group in groups for p in group["params"]):
        extra["fused"] = True
    return torch.optim.AdamW(
        groups, lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps, **extra
    )


def warmup_steps(spec: TrainingSpec, total_steps: int) -> int:
    """The configured warmup, else 1000 steps or 5% of a short run (whichever is smaller)."""
    if spec.warmup_steps is not None:
        return min(spec.warmup_steps, total_steps)
    return min(1000, max(1, int(0.05 * total_steps)))


def lr_at(step: int, total_steps: int, warmup: int, peak: float, min_ratio: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine down to ``min_ratio * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
