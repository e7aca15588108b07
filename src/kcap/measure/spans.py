"""Which tokens a span's loss charges: the first occurrence of a value, and where it ends.

Two rules make a summed span loss the log-probability of a generator that emits exactly that
value (Theorem 3.2 of the paper needs a generator, not a token sum):

- **First occurrence.** A value is charged where it first appears in the document; later
  repetitions (the full name in every sentence of bioS-fullname) are determined by it and are
  not charged again. `first_spans` finds, for every (label, chunk index), its first contiguous
  run of tokens.
- **The end of a value.** The summed loss of a value's tokens is -log P(the text starts with
  them). When the value's tokens are a proper prefix of another value of the same pool (a last
  name " Barr" = [" B", "arr"] of " Barrett" = [" B", "arr", "ett"], or "University of Alabama"
  of "University of Alabama at Birmingham"), that probability also holds the longer values: a
  generator that stops after them must pay for stopping. `Endings` lists, per pool, the value
  token sequences that other values extend and the tokens that extend them; the measure reads
  the model's probability of those tokens right after the span and charges
  -log(1 - P(continue)). For a pool whose values are prefix-free as token sequences (dates,
  fixed-length bioD chunks) nothing is charged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class TokenSpan:
    """Tokens ``[start, stop)`` of a document holding value ``(label, index)``."""

    label: int
    index: int
    start: int
    stop: int


def first_spans(labels: Sequence[int], index: Sequence[int]) -> dict[tuple[int, int], TokenSpan]:
    """The first contiguous run of tokens of every (label, index) other than 0 (template text)."""
    spans: dict[tuple[int, int], TokenSpan] = {}
    t, n = 0, len(labels)
    while t < n:
        key = (labels[t], index[t])
        stop = t + 1
        while stop < n and (labels[stop], index[stop]) == key:
            stop += 1
        if key[0] != 0 and key not in spans:
            spans[key] = TokenSpan(key[0], key[1], t, stop)
        t = stop
    return spans


Continuations = dict[tuple[int, ...], tuple[int, ...]]


def continuations(tok, values: Iterable[str]) -> Continuations:
    """{token sequence of a value: the tokens that extend it into another value} for the values
    (each rendered as a piece, leading space included) that are proper token prefixes of others.

    A token prefix is a string prefix, so only values that are string prefixes of other values
    are tokenized."""
    ordered = sorted(set(values))
    involved: set[str] = set()
    for i, value in enumerate(ordered):
        j = i + 1
        while j < len(ordered) and ordered[j].startswith(value):
            involved.update((value, ordered[j]))
            j += 1
    seqs = {tuple(tok.piece_ids(v)) for v in involved}
    table: dict[tuple[int, ...], set[int]] = {}
    for seq in seqs:
        for cut in range(1, len(seq)):
            if seq[:cut] in seqs:
                table.setdefault(seq[:cut], set()).add(seq[cut])
    return {k: tuple(sorted(v)) for k, v in table.items()}


def end_loss(logp_continue: np.ndarray) -> float:
    """-log(1 - P(continue)) in nats, from the log-probabilities of the continuing tokens."""
    p = float(np.exp(np.asarray(logp_continue, dtype=np.float64)).sum())
    return -math.log(max(1.0 - p, 1e-300))
