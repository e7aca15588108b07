"""AdamW with weight decay on matrices only, and the learning-rate schedules (warmup, then
cosine or warmup-stable-decay)."""

from __future__ import annotations

import math

import torch

from kcap.training.config import TrainingSpec


def make_optimizer(
    model: torch.nn.Module, spec: TrainingSpec, *, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW (SPEC §6): decay on parameters with >= 2 dims, none on biases and norm gains.
    ``fused``: torch's fused kernel (one call for all parameters) where every parameter is on a
    device that has one (CUDA, and the CPU since torch 2.4); otherwise the default
    implementation. On a CPU the fused kernel is 3-4x faster than the default per-parameter
    loop and agrees with it to float32 rounding (tests/test_speed_paths.py), not bitwise."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    extra = {}
    devices = {p.device.type for group in groups for p in group["params"]}
    if fused and devices and devices <= set(_fused_devices()):
        extra["fused"] = True
    return torch.optim.AdamW(
        groups, lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps, **extra
    )


def _fused_devices() -> list[str]:
    """Device types with a fused AdamW kernel in this torch ("cuda" and "cpu" since 2.4)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a torch without the helper: CUDA only, as before
        return ["cuda"]
    return _get_fused_kernels_supported_devices()


def warmup_steps(spec: TrainingSpec, total_steps: int) -> int:
    """The configured warmup, else 1000 steps or 5% of a short run (whichever is smaller)."""
    if spec.warmup_steps is not None:
        return min(spec.warmup_steps, total_steps)
    return min(1000, max(1, int(0.05 * total_steps)))


def lr_at(
    step: int,
    total_steps: int,
    warmup: int,
    peak: float,
    min_ratio: float,
    *,
    schedule: str = "cosine",
    decay_fraction: float = 0.2,
) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then ``cosine`` down to ``min_ratio *
    peak`` at the last step, or ``wsd`` (warmup-stable-decay): the peak held until the last
    ``decay_fraction`` of the steps, then a linear decay to ``min_ratio * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "wsd":
        decay = max(1, round(decay_fraction * total_steps))
        start = max(warmup, total_steps - decay)
        if step < start:
            return peak
        progress = min(1.0, (step - start) / max(1, total_steps - start))
        return peak * (1 - (1 - min_ratio) * progress)
    span = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def run_lr(spec: TrainingSpec, step: int, total_steps: int, warmup: int) -> float:
    """The learning rate of a run's step ``step`` under its `TrainingSpec` (before any
    restart's scaling)."""
    return lr_at(
        step,
        total_steps,
        warmup,
        spec.lr,
        spec.min_lr_ratio,
        schedule=spec.schedule,
        decay_fraction=spec.decay_fraction,
    )
