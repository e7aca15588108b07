"""Memorised bits of random strings (Morris et al. 2025, SPEC §2) and the capacity plateau.

A sequence x of S uniform symbols over V carries S·log2(V) bits. A model that assigns it
negative log-likelihood NLL(x) (in bits, summed over its S tokens given the ``<|eos|>`` that
opens every training row) saves S·log2 V - NLL(x) bits coding it (the arithmetic-coding gain);
clipped at zero per sequence, as in the reproductions of Morris et al., that is the *raw*
memorised bits of x.

Clipping gives a floor that is no memorisation: a model that memorised nothing but is not exactly
uniform (a unigram model, a slight preference for one symbol) codes some random strings shorter
than S·log2 V and others longer, and the clipped gain keeps only the first kind, so its raw total
grows linearly with M (0.22 bits per sequence for one symbol twice as likely as the others, at
S = 8, V = 16) and can hide the capacity plateau. So every measurement also scores M *fresh*
strings (`RandomStrings.fresh`: same S and V, never trained on) and reports memorised bits *net*
of that floor: net = Σ raw(training strings) - Σ raw(fresh strings), the same model, the same
clipping. For a model that memorised nothing the two sums have the same expectation, so net is 0
in expectation (it can come out slightly negative); a model that knows a training string gains on
it alone. A bound must not credit bits the model does not hold, so the net figure is what the
measurement reports and what the capacity plateau is read from; the raw figure stays beside it.
With ``max_sequences`` = m < M the m training strings are a random subset and the fresh strings
the first m of their stream, and both sums are scaled by M/m.

The result is a `Measurement` like the knowledge measure's, so runs, stores and reports handle
it unchanged: ``bits["value"]`` = ``bits["total"]`` = ``R``·P = net memorised bits
(``bits_unclipped`` the same difference without the clipping), ``p1`` = 0 (there are no names),
``p2`` = the mean NLL of a training sequence in nats, recall = the fraction of training sequences
greedy decoding reproduces exactly, and ``details`` the raw and floor figures and the
per-sequence view. The capacity is the plateau of the net bits as M grows, reported per parameter
(reference: about 3.6 bits/param in fp32, 3.5 in bf16).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from kcap.data.dataset import DEFAULT_EVAL_SEED, Dataset
from kcap.measure.losses import token_losses
from kcap.measure.measurement import LOG2E, Measurement


def gain_bits(nll_nats: np.ndarray, s: int, v: int) -> np.ndarray:
    """Per-sequence coding gain S·log2 V - NLL/ln 2 in bits (unclipped), for NLLs in nats."""
    return s * math.log2(v) - np.asarray(nll_nats, dtype=np.float64) * LOG2E


def memorized_bits(nll_nats: np.ndarray, s: int, v: int) -> np.ndarray:
    """Per-sequence memorised bits, max(0, S·log2 V - NLL/ln 2), for NLLs in nats."""
    return np.maximum(0.0, gain_bits(nll_nats, s, v))


def _score(
    model: torch.nn.Module,
    ids: np.ndarray,
    eos_id: int,
    batch_size: int,
    device: torch.device,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(NLL in nats, reproduced exactly by greedy decoding?) of each row of ``ids`` [n, S]."""
    nll = np.empty(len(ids))
    exact = np.empty(len(ids), dtype=bool)
    for start in range(0, len(ids), batch_size):
        block = ids[start : start + batch_size]
        losses, hits, _ = token_losses(model, block.tolist(), eos_id, device)
        stop = start + len(block)
        nll[start:stop] = [float(x.sum()) for x in losses]
        exact[start:stop] = [bool(h.all()) for h in hits]
        if progress:
            progress(len(block))
    return nll, exact


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
    """Net memorised bits of every sequence (or a random subset of ``max_sequences``, scaled to
    M): the raw bits on the training strings less those on as many fresh strings.
    ``progress`` counts training strings."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    strings, tok = dataset.population, dataset.tokenizer
    m_all = strings.n
    m = m_all if max_sequences is None else min(m_all, max_sequences)
    chosen = (
        np.arange(m_all)
        if m == m_all
        else np.sort(np.random.default_rng(eval_seed).choice(m_all, m, replace=False))
    )
    ids = strings.token_ids(tok)[chosen]
    fresh_ids = strings.fresh(eval_seed, m).token_ids(tok)
    nll, exact = _score(model, ids, tok.eos_id, batch_size, device, progress)
    fresh_nll, _ = _score(model, fresh_ids, tok.eos_id, batch_size, device, None)
    if was_training:
        model.train()
    return _measurement(dataset, nll, exact, fresh_nll, P_count, params, eval_seed)


def _measurement(
    dataset: Dataset,
    nll: np.ndarray,
    exact: np.ndarray,
    fresh_nll: np.ndarray,
    P_count: int,
    params: dict[str, int] | None,
    eval_seed: int,
) -> Measurement:
    """The `Measurement` of m scored training strings and m fresh ones, scaled to all M."""
    m_all, s, v = dataset.n, dataset.population.s, dataset.population.v
    m = len(nll)
    scale = m_all / m
    mem, floor = memorized_bits(nll, s, v), memorized_bits(fresh_nll, s, v)
    raw, floor_bits = float(mem.sum()) * scale, float(floor.sum()) * scale
    value = raw - floor_bits
    unclipped = float(gain_bits(nll, s, v).sum() - gain_bits(fresh_nll, s, v).sum()) * scale
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
        bits_unclipped={"name": 0.0, "value": unclipped, "diversity": 0.0, "total": unclipped},
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
            "bits_per_sequence": s * math.log2(v),
            "raw_memorized_bits": raw,
            "fresh_floor_bits": floor_bits,
            "net_memorized_bits": value,
            "mean_memorized_bits_per_sequence": float(mem.mean()),
            "mean_fresh_floor_bits_per_sequence": float(floor.mean()),
            "fresh_sequences": m,
            "sequences_clipped": clipped,
            "sequences_exact": int(exact.sum()),
        },
    )


@dataclass
class Capacity:
    """The capacity read off a memorisation sweep over M (one model, growing datasets)."""

    bits: float  # the plateau: the most (net) bits memorised at any M
    bits_per_param: float
    at_m: int  # the M where the maximum was reached
    plateaued: bool  # the data outgrew the model and memorisation stopped growing

    def to_dict(self) -> dict:
        return asdict(self)


def capacity_plateau(
    points: Sequence[tuple[int, float]], *, s: int, v: int, params: int, tol: float = 0.05
) -> Capacity:
    """Capacity from (M, net memorised bits) points of one model size: the bits are a
    measurement's ``bits["total"]``, net of the fresh-string floor (a raw total would keep
    rising with M on the floor alone and could hide the plateau).

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
