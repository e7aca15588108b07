"""Junk mixtures (paper §10, SPEC §2): useful bioS(N) diluted by random or repetitive junk.

A junk dataset is the useful bioS(N) population (the people the measurement scores; its bits are
``bios_bits(N)``) plus a junk source the training stream draws the other r/(1+r) of its tokens
from (`kcap.tokenization.mixture.MixtureStream` does the interleaving):

- ``random`` junk: bioS biographies of people drawn on the fly. Junk person k (k = 0, 1, ...)
  has the k-th name of a keyed pseudo-random bijection onto the D = N0 - N names no useful person
  has (`JunkNames`), and fresh uniform attributes. So junk never names a useful person and no
  junk person repeats within D = 1.6e8 - N documents; longer runs (the name space is finite)
  start a new, differently keyed cycle, in which each name again appears once.
- ``repetitive`` junk: a fixed bioS(1000) population (names disjoint from the useful people),
  cycled with fresh layouts and order every pass: "da Vinci painted the Mona Lisa" facts.

The domain token (`DOMAIN_TOKEN`, like a site name) is an optional special token prepended to
every useful biography; the paper's alternative prepends `JUNK_TOKEN` to every junk biography
instead. Both are reserved in every junk dataset's tokenizer, so datasets that differ only in
where the token goes share their tokenizer. The evaluation renders useful biographies the way
training does, domain token included, so the name loss p1 is conditioned on it as in training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from kcap.data import pools as P
from kcap.data.bios import (
    TAG_JUNK,
    TAG_JUNK_LAYOUT,
    TAG_JUNK_NAMES,
    TAG_JUNK_POPULATION,
    BioSPopulation,
    BioSRenderer,
    layouts,
    rng_for,
)
from kcap.data.bits import bios_bits
from kcap.data.dataset import (
    JUNK_POPULATION,
    TOKENIZER_SAMPLE,
    BioSSource,
    _manifest,
    _say,
    _training_texts,
    _used_tokens_bios,
    check_tokenizer_args,
    pool_texts,
)
from kcap.data.documents import OTHER, Document
from kcap.data.templates import ATTRIBUTES, load_templates
from kcap.errors import require
from kcap.tokenization.tokenizer import KTokenizer

JUNK_KINDS = ("random", "repetitive")
#: Where a domain token goes: nowhere, every useful biography, or every junk biography.
DOMAINS = ("none", "useful", "junk")
DOMAIN_TOKEN, JUNK_TOKEN = "<|wiki|>", "<|junk|>"
REPETITIVE_N = 1000
#: Random junk people are generated in blocks of this many (one RNG key per block).
JUNK_BLOCK = 512
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


# ----------------------------------------------------------------------------- junk names


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def feistel_permute(x: np.ndarray, space: int, keys: np.ndarray) -> np.ndarray:
    """A keyed bijection of [0, space) applied to ``x``: a balanced Feistel network on the
    smallest even number of bits covering ``space``, with cycle walking back into range."""
    half = max(1, (int(space - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)

    def rounds(v: np.ndarray) -> np.ndarray:
        left, right = v >> shift, v & mask
        for key in keys:
            left, right = right, left ^ (_mix64(right ^ key) & mask)
        return (left << shift) | right

    y = rounds(np.asarray(x, dtype=np.uint64))
    bad = y >= np.uint64(space)
    while bad.any():
        y[bad] = rounds(y[bad])
        bad = y >= np.uint64(space)
    return y.astype(np.int64)


def nth_unexcluded(rank: np.ndarray, excluded_sorted: np.ndarray) -> np.ndarray:
    """The ``rank``-th (0-based) integer >= 0 that is not in ``excluded_sorted`` (vectorised)."""
    below = excluded_sorted - np.arange(len(excluded_sorted))  # free integers below each one
    return rank + np.searchsorted(below, rank, side="right")


class JunkNames:
    """Name index of random-junk person k: cycle c = k // D, then the keyed (seed, c) Feistel
    permutation of k % D, mapped onto the D = N0 - len(exclude) names not excluded."""

    ROUNDS = 4

    def __init__(self, seed: int, exclude: np.ndarray):
        self.seed = seed
        self.excluded = np.unique(np.asarray(exclude, dtype=np.int64))
        self.space = P.N0 - len(self.excluded)
        self._keys: dict[int, np.ndarray] = {}

    def keys(self, cycle: int) -> np.ndarray:
        if cycle not in self._keys:
            rng = rng_for(self.seed, TAG_JUNK_NAMES, cycle)
            self._keys[cycle] = rng.integers(0, 2**63, self.ROUNDS, dtype=np.uint64)
        return self._keys[cycle]

    def __call__(self, k: np.ndarray) -> np.ndarray:
        k = np.asarray(k, dtype=np.int64)
        cycle, j = np.divmod(k, self.space)
        out = np.empty_like(k)
        for c in np.unique(cycle).tolist():
            sel = cycle == c
            ranks = feistel_permute(j[sel], self.space, self.keys(c))
            out[sel] = nth_unexcluded(ranks, self.excluded)
        return out


# ----------------------------------------------------------------------------- sources


class RandomJunkSource:
    """Endless random junk, as a `DocumentSource` of B = ``JUNK_BLOCK`` "people": its exposure
    e renders junk people e·B .. e·B + B - 1 (names from `JunkNames`, attributes and layouts
    keyed by (seed, e)), so the exposure stream's state is all the resumable state the junk
    needs. ``Document.person`` is the global junk index k."""

    n = JUNK_BLOCK

    def __init__(self, seed: int, exclude: np.ndarray, renderer: BioSRenderer | None = None):
        self.seed = seed
        self.names = JunkNames(seed, exclude)
        self._renderer = renderer
        self._cached: tuple[int, BioSRenderer, np.ndarray, np.ndarray] | None = None

    def people(self, block: int) -> BioSPopulation:
        """The B junk people of block ``block``."""
        k = block * self.n + np.arange(self.n, dtype=np.int64)
        return BioSPopulation.from_names(
            self.seed, self.names(k), rng_for(self.seed, TAG_JUNK, block)
        )

    def documents(self, exposure: int, people: np.ndarray) -> Iterator[Document]:
        if self._cached is None or self._cached[0] != exposure:
            pop = self.people(exposure)
            if self._renderer is None:
                self._renderer = BioSRenderer(pop, "online")
            tmpl, order = layouts(self.n, self.seed, TAG_JUNK_LAYOUT, exposure)
            self._cached = (exposure, self._renderer.for_population(pop), tmpl, order)
        _, renderer, tmpl, order = self._cached
        base = exposure * self.n
        rows = zip(people.tolist(), tmpl[people].tolist(), order[people].tolist(), strict=True)
        for p, t, o in rows:
            doc = renderer.render(p, t, o)
            doc.person = base + p
            yield doc


class TokenPrefixedSource:
    """Another source's documents with a special token prepended to each (a label-0 piece)."""

    def __init__(self, source, token: str):
        self.source = source
        self.token = token
        self.n = source.n
        self._piece = (token, OTHER, 0)
        if hasattr(source, "token_lengths"):  # else the stream counts with a dry pass
            self.token_lengths = self._prefixed_lengths

    def documents(self, exposure: int, people: np.ndarray) -> Iterator[Document]:
        for doc in self.source.documents(exposure, people):
            yield Document(doc.person, [self._piece, *doc.pieces])

    def _prefixed_lengths(self, tok, exposure: int) -> np.ndarray:
        """The wrapped source's length tables plus the marker's tokens."""
        return self.source.token_lengths(tok, exposure) + len(tok.piece_ids(self.token))


def make_useful_source(people: BioSPopulation, seed: int, domain: str, *, eval_: bool = False):
    """The useful people's biographies (training or evaluation), marked when ``domain`` says."""
    source = BioSSource(people, "online", seed, eval_=eval_)
    return TokenPrefixedSource(source, DOMAIN_TOKEN) if domain == "useful" else source


def make_junk_source(
    junk: str,
    seed: int,
    useful_names: np.ndarray,
    junk_people: BioSPopulation | None,
    domain: str,
    renderer: BioSRenderer | None = None,
):
    """The junk biographies: random people never among ``useful_names``, or ``junk_people``
    cycled; marked when ``domain`` says. ``renderer`` shares prepared tables (optional)."""
    if junk == "random":
        source = RandomJunkSource(seed, useful_names, renderer)
    else:
        source = BioSSource(junk_people, "online", seed, tag=TAG_JUNK_LAYOUT)
    return TokenPrefixedSource(source, JUNK_TOKEN) if domain == "junk" else source


def useful_source(dataset, seed: int, *, eval_: bool = False):
    """The useful people of a loaded junk dataset, rendered as in training."""
    domain = dataset.manifest["params"]["domain"]
    return make_useful_source(dataset.population, seed, domain, eval_=eval_)


def junk_source(dataset):
    """The junk of a loaded junk dataset."""
    params = dataset.manifest["params"]
    return make_junk_source(
        params["junk"],
        dataset.manifest["seed"],
        dataset.population.name,
        dataset.junk_population,
        params["domain"],
    )


# ----------------------------------------------------------------------------- generation


def check_junk_args(n: int, ratio: int, junk: str, domain: str, junk_n: int) -> None:
    require(1 <= n <= P.N0 // 2, "--n", f"must be between 1 and N0/2 = {P.N0 // 2:,}; got {n}")
    require(
        ratio >= 1, "--ratio", f"must be a positive integer (junk tokens per useful); got {ratio}"
    )
    require(junk in JUNK_KINDS, "--junk", f"must be one of {', '.join(JUNK_KINDS)}; got {junk!r}")
    require(domain in DOMAINS, "--domain", f"must be one of {', '.join(DOMAINS)}; got {domain!r}")
    require(1 <= junk_n <= P.N0 - n, "--junk-n", f"must be between 1 and N0 - N; got {junk_n}")


def build_junk(
    n: int,
    ratio: int,
    junk: str,
    seed: int,
    *,
    domain: str = "none",
    junk_n: int = REPETITIVE_N,
    vocab: int = 2048,
    tokenizer: str = "bpe",
    progress: Callable[[str], None] | None = None,
) -> tuple[dict, BioSPopulation, KTokenizer, dict]:
    """Sample the useful bioS(N) (identical to ``build_bios(N, seed)``'s people) and, for
    repetitive junk, the junk population; train the tokenizer; compute the manifest."""
    check_junk_args(n, ratio, junk, domain, junk_n)
    check_tokenizer_args(tokenizer, vocab)
    _say(progress, "sampling populations")
    useful = BioSPopulation.sample(n, seed)
    useful_src = BioSSource(useful, "online", seed)
    extras: dict = {}
    junk_pop = None
    if junk == "repetitive":
        junk_pop = BioSPopulation.sample(junk_n, seed, exclude=useful.name, tag=TAG_JUNK_POPULATION)
        extras[JUNK_POPULATION] = junk_pop
    junk_src = make_junk_source(junk, seed, useful.name, junk_pop, "none", useful_src.renderer)
    docs = list(useful_src.documents(0, np.arange(min(n, TOKENIZER_SAMPLE))))
    junk_docs = list(junk_src.documents(0, np.arange(min(junk_src.n, TOKENIZER_SAMPLE))))
    _say(progress, "training tokenizer")
    tok = KTokenizer.train(
        _training_texts(docs + junk_docs, pool_texts(names=True)),
        vocab_size=vocab,
        kind=tokenizer,
        special_tokens=[DOMAIN_TOKEN, JUNK_TOKEN],
    )
    _say(progress, "counting used tokens")
    used = _used_tokens_bios(useful_src, tok)
    if junk == "random":  # over a run, random junk reaches every name part and every value
        pools = P.load_pools()
        for text in [
            *pools.first,
            *(" " + m for m in pools.middle),
            *(" " + x for x in pools.last),
        ]:
            used.update(tok.piece_ids(text))
        for text in useful_src.renderer.value_pieces():
            used.update(tok.piece_ids(text))
    else:
        for doc in junk_src.documents(0, np.arange(junk_n)):
            used.update(tok.encode_pieces(doc.pieces)[0])
    marker = {"useful": DOMAIN_TOKEN, "junk": JUNK_TOKEN}.get(domain)
    if marker:
        used.add(tok.hf.token_to_id(marker))
    params = {"n": n, "ratio": ratio, "junk": junk, "domain": domain}
    if junk == "repetitive":
        params["junk_n"] = junk_n
    if marker == DOMAIN_TOKEN:
        docs = list(
            TokenPrefixedSource(useful_src, DOMAIN_TOKEN).documents(0, np.arange(len(docs)))
        )
    manifest = _manifest("junk", params, seed, bios_bits(n), tok, used, docs, list(ATTRIBUTES))
    manifest["templates"] = {a: len(t) for a, t in load_templates().items()}
    manifest["mixture"] = {
        "useful_token_fraction": 1 / (1 + ratio),
        "window_pattern": "window k is useful iff k % (ratio + 1) == 0",
        "marker_token": marker,
        "junk_people": "drawn on the fly, never a useful name"
        if junk == "random"
        else f"bioS({junk_n}) cycled",
    }
    return manifest, useful, tok, extras
