"""Model FLOPs utilisation (MFU) of kcap's trainer, where the device's peak is known.

MFU = tokens/s × training FLOPs per token / the device's peak FLOP/s. The peak is known only for
the CUDA devices below, under bf16 or fp16 autocast (their dense tensor-core figures); on a CPU,
in fp32 or on another device the trainer logs no MFU rather than a guess.
"""

from __future__ import annotations

import torch

from kcap.models.config import ModelConfig

#: Dense bf16/fp16 tensor-core peaks (FLOP/s) by a fragment of the CUDA device name; the first
#: fragment found in the name wins.
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
)


def peak_flops(device: torch.device, amp: torch.dtype | None) -> float | None:
    """The peak FLOP/s of ``device`` under autocast dtype ``amp``, or None when unknown."""
    if device.type != "cuda" or amp not in (torch.bfloat16, torch.float16):
        return None
    return peak_for_name(torch.cuda.get_device_name(device))


def peak_for_name(name: str) -> float | None:
    """The table's peak for a CUDA device name, or None."""
    return next((peak for fragment, peak in PEAK_FLOPS if fragment in name), None)


def flops_per_token(cfg: ModelConfig, params: dict[str, int]) -> float:
    """Training FLOPs per token (forward and backward): 6 per weight a token multiplies (the
    output head over the whole vocabulary included, unselected experts not), plus attention's
    12 · layers · context · d (the PaLM paper's estimate). ``params`` are the run's counts."""
    unselected = params["P"] - params["active"]
    weights = params["non_embedding"] - unselected + cfg.vocab_size * cfg.d_model
    return 6.0 * weights + 12.0 * cfg.n_layer * cfg.context * cfg.d_model
