"""bioD(N, K, C, D, L, T): parameterised synthetic knowledge (paper Definition 2.2, SPEC §2).

Each of K attributes ("ID 1".."ID K") has a set of D distinct chunks, each a string of L symbols
over an alphabet of T symbols; a person's value for an attribute is C chunks drawn iid uniformly
from that set. Symbols render as ``<tI>`` tokens that the tokenizer keeps whole (a leading space
is absorbed into a chunk's first symbol). One template sentence per attribute, random order:
"Anya Briar Forger's ID 7 is <t3><t9> <t5><t1>. Their ID 2 is ...". Pronouns are the neutral
"Their", so no information outside the bit formula is in the text.

`BioDPopulation.with_people` gives other people over the same chunk sets (the junk of a bioD
junk mixture, `kcap.data.junk`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kcap.data import pools as P
from kcap.data.bios import TAG_POPULATION, rng_for, sample_names
from kcap.data.documents import NAME, OTHER, VALUE_BASE, Document, Piece


def symbol(i: int) -> str:
    """The text of alphabet symbol i."""
    return f"<t{i}>"


@dataclass
class BioDParams:
    n: int
    k: int
    c: int
    d: int
    l: int  # noqa: E741 (the paper's name)
    t: int


@dataclass
class BioDPopulation:
    """Names, per-attribute chunk sets [K, D, L] and values [N, K, C] (chunk indices)."""

    seed: int
    params: BioDParams
    name: np.ndarray
    chunks: np.ndarray
    values: np.ndarray

    @property
    def n(self) -> int:
        return len(self.name)

    @classmethod
    def sample(cls, params: BioDParams, seed: int) -> BioDPopulation:
        rng = rng_for(seed, TAG_POPULATION)
        name = sample_names(rng, params.n)
        chunks = np.stack(
            [_distinct_rows(rng, params.d, params.l, params.t) for _ in range(params.k)]
        )
        return cls(seed, params, name, chunks, _values(rng, params))

    def with_people(self, name: np.ndarray, rng: np.random.Generator) -> BioDPopulation:
        """People named ``name`` over this population's chunk sets, each value C chunks drawn
        iid uniformly from ``rng`` (the same distribution as this population's values)."""
        params = replace(self.params, n=len(name))
        return BioDPopulation(
            self.seed, params, np.asarray(name), self.chunks, _values(rng, params)
        )

    def save(self, path: Path) -> None:
        p = self.params
        np.savez(
            path,
            seed=self.seed,
            params=[p.n, p.k, p.c, p.d, p.l, p.t],
            name=self.name,
            chunks=self.chunks,
            values=self.values,
        )

    @classmethod
    def load(cls, path: Path) -> BioDPopulation:
        with np.load(path) as z:
            return cls(
                int(z["seed"]),
                BioDParams(*map(int, z["params"])),
                z["name"],
                z["chunks"],
                z["values"],
            )

    def full_name(self, i: int) -> str:
        return " ".join(P.name_parts(self.name[i]))

    def chunk_text(self, attribute: int, chunk: int) -> str:
        return "".join(symbol(int(s)) for s in self.chunks[attribute, chunk])

    def value_text(self, person: int, attribute: int) -> str:
        return " ".join(self.chunk_text(attribute, int(c)) for c in self.values[person, attribute])


def _values(rng: np.random.Generator, p: BioDParams) -> np.ndarray:
    """Values [N, K, C]: chunk indices drawn iid uniformly from [0, D)."""
    return rng.integers(0, p.d, (p.n, p.k, p.c), dtype=np.int32)


def _distinct_rows(rng: np.random.Generator, d: int, length: int, t: int) -> np.ndarray:
    """d distinct rows of ``length`` symbols in [0, t), uniformly without replacement."""
    if length * np.log2(t) < 62:  # enumerate the space as integers, sample without replacement
        space = t**length
        idx = (
            rng.choice(space, d, replace=False) if space <= 10**7 else _distinct_ints(rng, d, space)
        )
        digits = [(idx // t**j) % t for j in reversed(range(length))]
        return np.stack(digits, axis=1).astype(np.int32)
    rows = np.empty((0, length), dtype=np.int32)
    while len(rows) < d:  # the space is astronomically larger than d: duplicates are rare
        cand = np.concatenate([rows, rng.integers(0, t, (d - len(rows), length), dtype=np.int32)])
        _, first = np.unique(cand, axis=0, return_index=True)
        rows = cand[np.sort(first)]
    return rows


def _distinct_ints(rng: np.random.Generator, d: int, space: int) -> np.ndarray:
    out = np.empty(0, dtype=np.int64)
    while len(out) < d:
        cand = np.concatenate([out, rng.integers(0, space, d - len(out), dtype=np.int64)])
        _, first = np.unique(cand, return_index=True)
        out = cand[np.sort(first)]
    return out


def biod_orders(n_people: int, k: int, *key: int) -> np.ndarray:
    """Sentence orders [n, K] (permutations of the K attributes), keyed like bioS layouts."""
    rng = rng_for(*key)
    return rng.permuted(np.tile(np.arange(k, dtype=np.int32), (n_people, 1)), axis=1)


class BioDRenderer:
    """Renders bioD people as labelled documents (value pieces are single chunks)."""

    def __init__(self, population: BioDPopulation):
        self.population = population

    def render(self, person: int, order: np.ndarray) -> Document:
        pop = self.population
        first, middle, last = pop.full_name(person).split(" ")
        pieces: list[Piece] = [(first, NAME, 0), (" " + middle, NAME, 0), (" " + last, NAME, 0)]
        for pos, a in enumerate(order.tolist()):
            head = f"'s ID {a + 1} is" if pos == 0 else f" Their ID {a + 1} is"
            pieces.append((head, OTHER, 0))
            for j, c in enumerate(pop.values[person, a].tolist()):
                pieces.append((" " + pop.chunk_text(a, c), VALUE_BASE + a, j))
            pieces.append((".", OTHER, 0))
        return Document(person, pieces)

    def value_pieces(self) -> list[str]:
        """The text of every value piece any person can have (every chunk, leading space)."""
        pop = self.population
        k, d = pop.params.k, pop.params.d
        return [" " + pop.chunk_text(a, c) for a in range(k) for c in range(d)]

    def symbols(self) -> list[str]:
        """Every alphabet symbol the dataset may contain (the tokenizer keeps each whole)."""
        return [symbol(i) for i in range(self.population.params.t)]
