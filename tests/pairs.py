"""A toy dataset family in one file: pairs(N, D), N people each paired with one of D symbols.

"Anya Briar Forger's pair is <t3>." -- one fixed document per person. It is what a family needs
and nothing more (population, source, bits, check/build, load, ``FAMILY``), written as a module
of `kcap.data` would be; ``kcap.data.dataset.register(FAMILY)`` makes kcap build, load, train
and measure it. Its knowledge is bioD(N, 1, 1, D, 1, D)'s, so it asks for the bioD bound: its
manifest gives the bound the shape it reads (K = C = L = 1, T = D).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kcap.data import pools as P
from kcap.data.biod import symbol
from kcap.data.bios import TAG_POPULATION, rng_for, sample_names
from kcap.data.build import (
    POPULATION,
    Progress,
    check_tokenizer_args,
    document_tokens,
    make_manifest,
    say,
)
from kcap.data.documents import NAME, OTHER, VALUE_BASE, Document
from kcap.data.family import Family
from kcap.errors import require
from kcap.tokenization.tokenizer import KTokenizer


@dataclass
class Pairs:
    """N names (indices into the N0 name space) and each one's symbol in [0, D)."""

    seed: int
    d: int
    name: np.ndarray
    value: np.ndarray

    @property
    def n(self) -> int:
        return len(self.name)

    @classmethod
    def sample(cls, n: int, d: int, seed: int) -> Pairs:
        rng = rng_for(seed, TAG_POPULATION)
        return cls(seed, d, sample_names(rng, n), rng.integers(0, d, n))

    def save(self, path: Path) -> None:
        np.savez(path, seed=self.seed, d=self.d, name=self.name, value=self.value)

    @classmethod
    def load(cls, path: Path) -> Pairs:
        with np.load(path) as z:
            return cls(int(z["seed"]), int(z["d"]), z["name"], z["value"])


class PairsSource:
    """Every person's one document, the same at every exposure and for evaluation."""

    def __init__(self, pairs: Pairs):
        self.pairs = pairs
        self.n = pairs.n

    def documents(self, exposure: int, people: np.ndarray) -> Iterator[Document]:
        for p in people.tolist():
            first, middle, last = P.name_parts(self.pairs.name[p])
            pieces = [(first, NAME, 0), (" " + middle, NAME, 0), (" " + last, NAME, 0)]
            pieces += [
                ("'s pair is", OTHER, 0),
                (" " + symbol(int(self.pairs.value[p])), VALUE_BASE, 0),
            ]
            yield Document(p, [*pieces, (".", OTHER, 0)])


def pairs_bits(n: int, d: int) -> dict[str, float]:
    """The names chosen among N0, and one symbol of D per person."""
    name, value = n * math.log2(P.N0 / n), n * math.log2(d)
    return {"name": name, "value": value, "diversity": 0.0, "total": name + value}


def check_pairs(n: int, d: int, seed: int = 0, *, vocab: int = 400) -> None:
    require(1 <= n <= P.N0, "--n", f"must be between 1 and N0; got {n}")
    require(d >= 2, "--d", f"must be at least 2; got {d}")
    check_tokenizer_args("bpe", vocab)


def build_pairs(
    n: int, d: int, seed: int = 0, *, vocab: int = 400, progress: Progress = None
) -> tuple[dict, Pairs, KTokenizer]:
    check_pairs(n, d, seed, vocab=vocab)
    say(progress, "sampling pairs")
    pairs = Pairs.sample(n, d, seed)
    source = PairsSource(pairs)
    docs = list(source.documents(0, np.arange(n)))
    symbols = [symbol(i) for i in range(d)]
    tok = KTokenizer.train((doc.text for doc in docs), vocab_size=vocab + d, symbols=symbols)
    params = {"n": n, "d": d, "k": 1, "c": 1, "l": 1, "t": d}  # the bioD bound's shape
    used = document_tokens(source, tok)
    manifest = make_manifest("pairs", params, seed, pairs_bits(n, d), tok, used, docs, ["pair"])
    return manifest, pairs, tok


def _load(path: Path, manifest: dict) -> tuple[Pairs, dict]:
    return Pairs.load(path / POPULATION), {}


def _source(dataset, *, eval_: bool, eval_seed: int) -> PairsSource:
    return PairsSource(dataset.population)


FAMILY = Family("pairs", check_pairs, build_pairs, _load, _source, measure="biod")
