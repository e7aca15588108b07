"""bioD(N, K, C, D, L, T): parameterised synthetic knowledge (paper Definition 2.2, SPEC §2).

Each of K attributes ("ID 1".."ID K") has a set of D distinct chunks, each a string of L symbols
over an alphabet of T symbols; a person's value for an attribute is C chunks drawn iid uniformly
from that set. Symbols render as ``<tI>`` tokens that the tokenizer keeps whole (a leading space
is absorbed into a chunk's first symbol). One template sentence per attribute, random order:
"Anya Briar Forger's ID 7 is <t3><t9> <t5><t1>. Their ID 2 is ...". Pronouns are the neutral
"Their", so no information outside the bit formula is in the text.

`BioDPopulation.with_people` gives other people over the same chunk sets (the junk of a bioD
junk mixture, `kcap.data.junk`). `BioDSource` renders a population per exposure (the stream's
`DocumentSource`), `biod_bits` counts its bits, and `build_biod` samples bioD, trains its
tokenizer and writes its manifest; ``FAMILY`` is the bioD family the dataset registry
(`kcap.data.dataset`) knows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kcap.data import pools as P
from kcap.data.bios import (
    TAG_EVAL,
    TAG_POPULATION,
    TAG_TRAIN,
    name_part_lengths,
    rng_for,
    sample_names,
)
from kcap.data.build import (
    POPULATION,
    TOKENIZER_SAMPLE,
    Progress,
    check_tokenizer_args,
    document_tokens,
    make_manifest,
    say,
)
from kcap.data.documents import NAME, OTHER, VALUE_BASE, Document, Piece
from kcap.data.family import Family
from kcap.errors import require
from kcap.tokenization.tokenizer import KTokenizer


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
    #: Cut each name pool (first, middle, last) to its first ``name_pool`` entries: pool³ names
    #: and a vocabulary of 3·pool name words instead of 1,800 (None: the paper's N0 names).
    name_pool: int | None = None


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
        name = sample_names(rng, params.n, pool=params.name_pool)
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
        pool = {} if p.name_pool is None else {"name_pool": p.name_pool}
        np.savez(
            path,
            seed=self.seed,
            params=[p.n, p.k, p.c, p.d, p.l, p.t],
            name=self.name,
            chunks=self.chunks,
            values=self.values,
            **pool,
        )

    @classmethod
    def load(cls, path: Path) -> BioDPopulation:
        with np.load(path) as z:
            pool = int(z["name_pool"]) if "name_pool" in z else None
            return cls(
                int(z["seed"]),
                BioDParams(*map(int, z["params"]), name_pool=pool),
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


def sentence_head(attribute: int, first: bool) -> str:
    """The text that opens the sentence of ``attribute``: after the name in the first sentence,
    after the previous sentence's period in the others."""
    return f"'s ID {attribute + 1} is" if first else f" Their ID {attribute + 1} is"


class BioDRenderer:
    """Renders bioD people as labelled documents (value pieces are single chunks)."""

    def __init__(self, population: BioDPopulation):
        self.population = population

    def render(self, person: int, order: np.ndarray) -> Document:
        pop = self.population
        first, middle, last = pop.full_name(person).split(" ")
        pieces: list[Piece] = [(first, NAME, 0), (" " + middle, NAME, 0), (" " + last, NAME, 0)]
        for pos, a in enumerate(order.tolist()):
            pieces.append((sentence_head(a, pos == 0), OTHER, 0))
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


# ----------------------------------------------------------------------------- bits


def biod_bits(
    n: int,
    k: int,
    c: int,
    d: int,
    l: int,  # noqa: E741
    t: int,
    name_pool: int | None = None,
) -> dict[str, float]:
    """Bits of bioD(N, K, C, D, L, T) (SPEC §2): name = N·log2(N0/N) (N0 = pool³ with cut name
    pools), value = N·K·C·log2(D), diversity = K·D·log2(T^L/D) (the chunk sets)."""
    name = n * math.log2(P.name_space(name_pool) / n)
    value = n * k * c * math.log2(d)
    diversity = k * d * (l * math.log2(t) - math.log2(d))
    return {"name": name, "value": value, "diversity": diversity, "total": name + value + diversity}


def biod_attributes(k: int) -> list[str]:
    """The attribute names of bioD with K attributes: "ID 1".."ID K"."""
    return [f"ID {i + 1}" for i in range(k)]


# ----------------------------------------------------------------------------- source


class BioDSource:
    """bioD documents per exposure (sentence order re-drawn every exposure).

    ``tag`` overrides the order stream, as for `kcap.data.bios.BioSSource` (repetitive bioD
    junk)."""

    def __init__(
        self,
        population: BioDPopulation,
        seed: int,
        *,
        eval_: bool = False,
        tag: int | None = None,
    ):
        self.renderer = BioDRenderer(population)
        self.n = population.n
        self.k = population.params.k
        self.seed = seed
        self.tag = tag if tag is not None else TAG_EVAL if eval_ else TAG_TRAIN
        self.fixed = eval_
        self._cached: tuple[int, np.ndarray] | None = None
        self._lengths: tuple[KTokenizer, tuple[np.ndarray, np.ndarray]] | None = None

    def orders_at(self, exposure: int) -> np.ndarray:
        """Everyone's sentence orders [N, K] at ``exposure`` (cached)."""
        e = 0 if self.fixed else exposure
        if self._cached is None or self._cached[0] != e:
            self._cached = (e, biod_orders(self.n, self.k, self.seed, self.tag, e))
        return self._cached[1]

    def token_lengths(self, tok: KTokenizer, exposure: int) -> np.ndarray:
        """Tokens in every person's document at ``exposure`` (eos excluded), from tables: only
        which attribute comes first changes a document's length."""
        base, heads = self._length_tables(tok)
        first_attr = self.orders_at(exposure)[:, 0]
        return base + heads[first_attr, 0] - heads[first_attr, 1]

    def _length_tables(self, tok: KTokenizer) -> tuple[np.ndarray, np.ndarray]:
        """Each person's length with every sentence opened by " Their ID k is", and the head
        lengths [K, (first, later)] (computed once per tokenizer)."""
        if self._lengths is not None and self._lengths[0] is tok:
            return self._lengths[1]
        pop = self.renderer.population
        piece = lambda text: len(tok.piece_ids(text))  # noqa: E731
        first_len, middle_len, last_len = name_part_lengths(tok)
        first, middle, last = P.split_name(pop.name)
        name = first_len[first, 0] + middle_len[middle] + last_len[last]
        heads = np.array(
            [[piece(sentence_head(a, opens)) for opens in (True, False)] for a in range(self.k)]
        )
        chunks = np.array(
            [
                [piece(" " + pop.chunk_text(a, c)) for c in range(pop.params.d)]
                for a in range(self.k)
            ]
        )
        values = chunks[np.arange(self.k)[None, :, None], pop.values].sum(axis=(1, 2))
        base = name + values + heads[:, 1].sum() + self.k * piece(".")
        self._lengths = (tok, (base, heads))
        return base, heads

    def documents(self, exposure: int, people: np.ndarray) -> Iterator[Document]:
        orders = self.orders_at(exposure)
        for p in people.tolist():
            yield self.renderer.render(p, orders[p])


# ----------------------------------------------------------------------------- generation


def check_biod_params(p: BioDParams) -> None:
    """Refuse a bad bioD(N, K, C, D, L, T) (a `KcapError` naming the flag)."""
    pool = p.name_pool
    if pool is not None:
        require(
            1 <= pool <= P.MAX_NAME_POOL,
            "--name-pool",
            f"must be between 1 and {P.MAX_NAME_POOL} (the smallest name pool); got {pool}",
        )
    space, what = P.name_space(pool), "N0" if pool is None else "name-pool³"
    require(1 <= p.n <= space, "--n", f"must be between 1 and {what} = {space:,}; got {p.n}")
    for name, value in (("--k", p.k), ("--c", p.c), ("--d", p.d), ("--l", p.l)):
        require(value >= 1, name, f"must be a positive integer; got {value}")
    require(p.t >= 2, "--t", f"must be at least 2; got {p.t}")
    require(p.d <= p.t**p.l, "--d", f"must be at most T^L = {p.t}^{p.l}; got {p.d}")


def check_biod(p: BioDParams, seed: int, *, vocab: int = 2048, tokenizer: str = "bpe") -> None:
    """Refuse bad arguments of `build_biod`."""
    check_biod_params(p)
    check_tokenizer_args(tokenizer, vocab)


def build_biod(
    p: BioDParams,
    seed: int,
    *,
    vocab: int = 2048,
    tokenizer: str = "bpe",
    progress: Progress = None,
) -> tuple[dict, BioDPopulation, KTokenizer]:
    """Sample bioD(N, K, C, D, L, T), train its tokenizer, and compute the manifest."""
    check_biod(p, seed, vocab=vocab, tokenizer=tokenizer)
    say(progress, "sampling population")
    pop = BioDPopulation.sample(p, seed)
    source = BioDSource(pop, seed)
    docs = list(source.documents(0, np.arange(min(p.n, TOKENIZER_SAMPLE))))
    say(progress, "training tokenizer")
    symbols = source.renderer.symbols()
    tok = KTokenizer.train(
        (d.text for d in docs), vocab_size=vocab + len(symbols), kind=tokenizer, symbols=symbols
    )
    say(progress, "counting used tokens")
    used = document_tokens(source, tok)
    params = {"n": p.n, "k": p.k, "c": p.c, "d": p.d, "l": p.l, "t": p.t}
    if p.name_pool is not None:  # absent from default manifests (their hashes are unchanged)
        params["name_pool"] = p.name_pool
    bits = biod_bits(p.n, p.k, p.c, p.d, p.l, p.t, p.name_pool)
    manifest = make_manifest("biod", params, seed, bits, tok, used, docs, biod_attributes(p.k))
    return manifest, pop, tok


# ----------------------------------------------------------------------------- the family


def _load(path: Path, manifest: dict) -> tuple[BioDPopulation, dict]:
    return BioDPopulation.load(path / POPULATION), {}


def _source(dataset, *, eval_: bool, eval_seed: int) -> BioDSource:
    """Training: keyed by the dataset seed; evaluation: by ``eval_seed``."""
    seed = eval_seed if eval_ else dataset.manifest["seed"]
    return BioDSource(dataset.population, seed, eval_=eval_)


FAMILY = Family("biod", check_biod, build_biod, _load, _source, measure="biod")
