"""Memorised bits of random strings (Morris et al. 2025, SPEC §2) and the capacity plateau.

A sequence x of S uniform symbols over V carries S·log2(V) bits. A model that assigns it
negative log-likelihood NLL(x) (in bits, summed over its S tokens given the ``<|eos|>`` that
opens every training row) has memorised max(0, S·log2 V - NLL(x)) bits of it (the arithmetic-
coding length saved; clipped per sequence, as in the reproductions of Morris et al.). Summed over
the M sequences this is the memorised total; its plateau as M grows is the model's capacity,
reported per parameter (reference: about 3.6 bits/param in fp32, 3.5 in bf16).

The result is a `Measurement` like the knowledge measure's, so runs, stores and reports handle
it unchanged: ``bits["value"]`` = ``bits["total"]`` = memorised bits, ``p1`` = 0 (there are no
names), ``p2`` = the mean NLL of a sequence in nats, recall = the fraction of sequences greedy
decoding reproduces exactly, and ``details`` the per-sequence view.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from kcap.data.dataset import DEFAULT_EVAL_SEED, Dataset
from kcap.measure.knowledge import LOG2E, Measurement
from kcap.measure.losses import token_losses


def memorized_bits(nll_nats: np.ndarray, s: int, v: int) -> np.ndarray:
    """Per-sequence memorised bits, max(0, S·log2 V - NLL/ln 2), for NLLs in nats."""
    return np.maximum(0.0, s * math.log2(v) - np.asarray(nll_nats, dtype=np.float64) * LOG2E)


@torch.no_grad()
def measure_memorization(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    P_count: int,
    params: dict[str, int] | None = None,
    eval_seed: int = DEFAULT_EVAL_SEED,
    max_sequences: int | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> Measurement:
    """Memorised bits of every sequence (or a random subset of ``max_sequences``, scaled to M)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    strings = dataset.population
    m_all, s, v = strings.n, strings.s, strings.v
    ids = strings.token_ids(dataset.tokenizer)
    m = m_all if max_sequences is None else min(m_all, max_sequences)
    chosen = (
        np.arange(m_all)
        if m == m_all
        else np.sort(np.random.default_rng(eval_seed).choice(m_all, m, replace=False))
    )
    nll = np.empty(m)
    exact = np.empty(m, dtype=bool)
    for start in range(0, m, batch_size):
        block = ids[chosen[start : start + batch_size]]
        losses, hits, _ = token_losses(model, block.tolist(), dataset.tokenizer.eos_id, device)
        stop = start + len(block)
        nll[start:stop] = [float(x.sum()) for x in losses]
        exact[start:stop] = [bool(h.all()) for h in hits]
        if progress:
            progress(len(block))
    if was_training:
        model.train()
    per_seq_bits = s * math.log2(v)
    mem = memorized_bits(nll, s, v)
    scale = m_all / m
    value = float(mem.sum()) * scale
    raw_value = float((per_seq_bits - nll * LOG2E).sum()) * scale
    clipped = int((mem == 0).sum())
    data_bits = float(dataset.bits["total"])
    p2 = float(nll.mean())
    recall = float(exact.mean())
    return Measurement(
        kind=dataset.kind,
        n_people=m_all,
        n_measured=m,
        p1=0.0,
        p2=p2,
        p3=None,
        bits={"name": 0.0, "value": value, "diversity": 0.0, "total": value},
        bits_unclipped={"name": 0.0, "value": raw_value, "diversity": 0.0, "total": raw_value},
        clipped=["value"] if clipped else [],
        bits_per_attribute={"sequence": value},
        loss_per_attribute={"sequence": p2},
        recall_accuracy=recall,
        recall_per_attribute={"sequence": recall},
        P=P_count,
        R=value / P_count,
        R_max=data_bits / P_count,
        data_bits=data_bits,
        eval_seed=eval_seed,
        params=dict(params or {}),
        details={
            "bits_per_sequence": per_seq_bits,
            "mean_memorized_bits_per_sequence": float(mem.mean()),
            "sequences_clipped": clipped,
            "sequences_exact": int(exact.sum()),
        },
    )


@dataclass
class Capacity:
    """The capacity read off a memorisation sweep over M (one model, growing datasets)."""

    bits: float  # the plateau: the most bits memorised at any M
    bits_per_param: float
    at_m: int  # the M where the maximum was reached
    plateaued: bool  # the data outgrew the model and memorisation stopped growing

    def to_dict(self) -> dict:
        return asdict(self)


def capacity_plateau(
    points: Sequence[tuple[int, float]], *, s: int, v: int, params: int, tol: float = 0.05
) -> Capacity:
    """Capacity from (M, memorised bits) points of one model size.

    The capacity is the largest memorised total (past the plateau memorisation may even fall:
    the double descent of Morris et al.). It counts as a plateau only when the sweep went past
    it: the largest M holds more bits than the maximum, and memorisation there grew by less
    than ``tol`` (relative) over the previous M, or fell. Otherwise the sweep must extend to
    larger M before the figure is a capacity rather than a lower bound on it."""
    if not points:
        raise ValueError("capacity_plateau needs at least one (M, bits) point")
    pts = sorted((int(m), float(b)) for m, b in points)
    best_m, best = max(pts, key=lambda p: p[1])
    last_m, last = pts[-1]
    grew = len(pts) > 1 and last > (1 + tol) * pts[-2][1]
    outgrown = last_m * s * math.log2(v) > best
    return Capacity(
        bits=best,
        bits_per_param=best / params,
        at_m=best_m,
        plateaued=bool(len(pts) > 1 and outgrown and not grew),
    )
