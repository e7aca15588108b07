"""Random strings (Morris et al. 2025, SPEC §2): M sequences of S symbols drawn uniformly from V.

A sequence carries exactly S·log2(V) bits (704 for the defaults S = 64, V = 2048) and nothing
can be generalised from it, so the bits a model reproduces are raw memorisation. The dataset
stores the sequences (``population.npz``); its tokenizer is the trivial one of the alphabet
(symbol ``<tI>`` is token I, ``<|eos|>`` is token V; `KTokenizer.for_symbols`).

Training shows one sequence per row, ``<|eos|> x_1 .. x_S`` (`kcap.tokenization.rows`), every
sequence once per epoch in a fresh order; E epochs are E exposures. The measurement
(`kcap.measure.memorization`) scores each sequence exactly as it was trained: given the eos.

**Fresh strings** (`RandomStrings.fresh`) are the measurement's control: strings of the same S
and V the model never saw, whose score is the floor a model reaches without memorising anything.
They come from their own random stream, ``rng_for(seed, TAG_FRESH, eval_seed)``: a key apart from
the training strings' ``rng_for(seed, TAG_POPULATION)`` (so independent of them), fixed by the
dataset seed and the evaluation seed. A draw that equals a training string is drawn again, so no
fresh string is ever a training string.

``FAMILY`` is the random-strings family the dataset registry (`kcap.data.dataset`) knows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kcap.data.biod import symbol
from kcap.data.bios import TAG_POPULATION, rng_for
from kcap.data.build import POPULATION, Progress, say
from kcap.data.documents import SEQUENCE, Document
from kcap.data.family import Family
from kcap.errors import require
from kcap.tokenization.tokenizer import KTokenizer

DEFAULT_S, DEFAULT_V = 64, 2048
MAX_SYMBOLS = 1 << 20
TAG_FRESH = 64  # the fresh strings' stream: apart from every tag of `kcap.data.bios` (< 64)


@dataclass
class RandomStrings:
    """The sequences [M, S] of symbol indices in [0, V)."""

    seed: int
    v: int
    sequences: np.ndarray

    @property
    def n(self) -> int:
        return len(self.sequences)

    @property
    def s(self) -> int:
        return self.sequences.shape[1]

    @classmethod
    def sample(cls, m: int, s: int, v: int, seed: int) -> RandomStrings:
        dtype = np.int16 if v <= np.iinfo(np.int16).max else np.int32
        seqs = rng_for(seed, TAG_POPULATION).integers(0, v, (m, s), dtype=dtype)
        return cls(seed, v, seqs)

    def fresh(self, eval_seed: int, count: int | None = None) -> RandomStrings:
        """``count`` (default M) fresh strings: same S and V, none of them a training string.

        Drawn iid uniform from ``rng_for(seed, TAG_FRESH, eval_seed)``, each draw that equals a
        training string drawn again (so they are uniform over the strings outside the training
        set); deterministic from the dataset seed and ``eval_seed``."""
        n = self.n if count is None else count
        train = _row_keys(self.sequences)
        space = self.v**self.s
        require(
            space > self.n or len(np.unique(train)) < space,
            "dataset",
            f"its strings are all the {self.v}^{self.s} possible ones: none is left unseen",
        )
        rng = rng_for(self.seed, TAG_FRESH, eval_seed)
        dtype = self.sequences.dtype
        seqs = rng.integers(0, self.v, (n, self.s), dtype=dtype)
        seen = np.isin(_row_keys(seqs), train)
        while seen.any():
            seqs[seen] = rng.integers(0, self.v, (int(seen.sum()), self.s), dtype=dtype)
            seen[seen] = np.isin(_row_keys(seqs[seen]), train)
        return RandomStrings(self.seed, self.v, seqs)

    def save(self, path: Path) -> None:
        np.savez(path, seed=self.seed, v=self.v, sequences=self.sequences)

    @classmethod
    def load(cls, path: Path) -> RandomStrings:
        with np.load(path) as z:
            return cls(int(z["seed"]), int(z["v"]), z["sequences"])

    def token_ids(self, tok: KTokenizer) -> np.ndarray:
        """The sequences as token ids [M, S] (int64)."""
        lookup = np.array([tok.hf.token_to_id(symbol(i)) for i in range(self.v)], dtype=np.int64)
        return lookup[self.sequences]


def _row_keys(seqs: np.ndarray) -> np.ndarray:
    """One opaque value per row [M] (the row's bytes), equal exactly when the rows are equal."""
    rows = np.ascontiguousarray(seqs)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()


class RandomStringSource:
    """Sequences as documents (one ``SEQUENCE`` piece per symbol, together one span), the same
    for every exposure and for evaluation; used to show a dataset, while training and the
    measurement read token ids directly."""

    def __init__(self, strings: RandomStrings):
        self.strings = strings
        self.n = strings.n

    def documents(self, exposure: int, people: np.ndarray) -> Iterator[Document]:
        for p in people.tolist():
            pieces = [(symbol(x), SEQUENCE, 0) for x in self.strings.sequences[p].tolist()]
            yield Document(p, pieces)


def random_bits(m: int, s: int, v: int) -> dict[str, float]:
    """Bits of M uniform random sequences: M·S·log2(V), all of it "value" knowledge."""
    value = m * s * math.log2(v)
    return {"name": 0.0, "value": value, "diversity": 0.0, "total": value}


def check_random(m: int, s: int = DEFAULT_S, v: int = DEFAULT_V, seed: int = 0) -> None:
    """Refuse bad arguments of `build_random` (a `KcapError` naming the flag)."""
    require(m >= 1, "--m", f"must be a positive integer; got {m}")
    require(s >= 1, "--s", f"must be a positive integer; got {s}")
    require(2 <= v <= MAX_SYMBOLS, "--v", f"must be between 2 and {MAX_SYMBOLS:,}; got {v}")
    require(m * s <= 2**31, "--m", f"M·S must be at most 2^31 symbols; got {m * s:,}")


def build_random(
    m: int,
    s: int = DEFAULT_S,
    v: int = DEFAULT_V,
    seed: int = 0,
    *,
    progress: Progress = None,
) -> tuple[dict, RandomStrings, KTokenizer]:
    """Sample M random strings and compute the manifest (nothing written)."""
    check_random(m, s, v, seed)
    say(progress, "sampling sequences")
    strings = RandomStrings.sample(m, s, v, seed)
    tok = KTokenizer.for_symbols([symbol(i) for i in range(v)])
    used = len(np.unique(strings.sequences)) + 1  # the symbols that occur, and eos
    manifest = {
        "kind": "random",
        "params": {"m": m, "s": s, "v": v},
        "seed": seed,
        "bits": random_bits(m, s, v),
        "vocab": {
            "tokenizer": tok.kind,
            "vocab_size": tok.vocab_size,
            "used_tokens": used,
            "mean_tokens_per_document": float(s + 1),
        },
        "attributes": ["sequence"],
        "bits_per_sequence": s * math.log2(v),
    }
    return manifest, strings, tok


def _load(path: Path, manifest: dict) -> tuple[RandomStrings, dict]:
    return RandomStrings.load(path / POPULATION), {}


def _source(dataset, *, eval_: bool, eval_seed: int) -> RandomStringSource:
    """The sequences, the same for training and evaluation."""
    return RandomStringSource(dataset.population)


FAMILY = Family("random", check_random, build_random, _load, _source, measure="random")
