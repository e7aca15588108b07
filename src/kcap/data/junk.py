"""Junk mixtures (paper §10, SPEC §2): useful bioS(N) or bioD(N, K, C, D, L, T) diluted by
random or repetitive junk of the same kind.

A junk dataset is the useful population (the people the measurement scores: bioS(N) as
``build_bios`` samples it, or with ``useful="biod"`` bioD(N, K, C, D, L, T) as ``build_biod``
does; its bits are those of that plain dataset) plus a junk source the training stream draws the
other r/(1+r) of its tokens from (`kcap.tokenization.mixture.MixtureStream` interleaves them):

- ``random`` junk: biographies of people drawn on the fly. Junk person k (k = 0, 1, ...)
  has the k-th name of a keyed pseudo-random bijection onto the N0 - N names no useful person
  has (`JunkNames`), and fresh uniform attributes (bioD: fresh values over the useful people's
  chunk sets, the dataset's "pools"). So junk never names a useful person and no junk person
  repeats within 1.6e8 - N documents; longer runs (the name space is finite) start a new,
  differently keyed cycle, in which each name again appears once.
- ``repetitive`` junk: a fixed population of ``junk_n`` = 1000 people (names disjoint from the
  useful people; bioD: over the same chunk sets), stored with the dataset and cycled with fresh
  layouts and order every pass: "da Vinci painted the Mona Lisa" facts.

The domain token (`DOMAIN_TOKEN`, like a site name) is an optional special token prepended to
every useful biography; the paper's alternative prepends `JUNK_TOKEN` to every junk biography
instead. Both are reserved in every junk dataset's tokenizer, so datasets that differ only in
where the token goes share their tokenizer. The evaluation renders useful biographies the way
training does, domain token included, so the name loss p1 is conditioned on it as in training.

``FAMILY`` is the junk-mixture family the dataset registry (`kcap.data.dataset`) knows: a
mixture is measured with its useful data's bound (bioS or bioD) on its useful people; `junk_source`
gives the junk documents of a loaded mixture (`kcap.tokenization.factory` streams them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from kcap.data import pools as P
from kcap.data.biod import (
    BioDParams,
    BioDPopulation,
    BioDRenderer,
    BioDSource,
    biod_attributes,
    biod_bits,
    biod_orders,
    check_biod_params,
)
from kcap.data.bios import (
    TAG_JUNK,
    TAG_JUNK_LAYOUT,
    TAG_JUNK_NAMES,
    TAG_JUNK_POPULATION,
    BioSPopulation,
    BioSRenderer,
    BioSSource,
    bios_bits,
    layouts,
    rng_for,
    sample_names,
    template_counts,
    used_tokens_bios,
)
from kcap.data.build import (
    POPULATION,
    TOKENIZER_SAMPLE,
    Progress,
    check_tokenizer_args,
    document_tokens,
    make_manifest,
    pool_texts,
    say,
    training_texts,
)
from kcap.data.documents import OTHER, Document
from kcap.data.family import Family
from kcap.data.templates import ATTRIBUTES
from kcap.errors import require
from kcap.tokenization.tokenizer import KTokenizer

JUNK_KINDS = ("random", "repetitive")
Population = BioSPopulation | BioDPopulation
#: What the useful people (and the junk) are: bioS, or bioD with the spec's K, C, D, L, T.
USEFUL_KINDS = ("bios", "biod")
#: Where a domain token goes: nowhere, every useful biography, or every junk biography.
DOMAINS = ("none", "useful", "junk")
DOMAIN_TOKEN, JUNK_TOKEN = "<|wiki|>", "<|junk|>"
REPETITIVE_N = 1000
#: Random junk people are generated in blocks of this many (one RNG key per block).
JUNK_BLOCK = 512
#: The file of a repetitive mixture's junk people.
JUNK_POPULATION = "junk_population.npz"
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
    """Endless random bioS junk, as a `DocumentSource` of B = ``JUNK_BLOCK`` "people": its
    exposure e renders junk people e·B .. e·B + B - 1 (names from `JunkNames`, attributes and
    layouts keyed by (seed, e)), so the exposure stream's state is all the resumable state the
    junk needs. ``Document.person`` is the global junk index k."""

    n = JUNK_BLOCK

    def __init__(self, seed: int, exclude: np.ndarray, renderer: BioSRenderer | None = None):
        self.seed = seed
        self.names = JunkNames(seed, exclude)
        self._renderer = renderer
        self._cached: tuple[int, Callable[[int], Document]] | None = None

    def block_names(self, block: int) -> np.ndarray:
        """The names of the B junk people of block ``block``."""
        return self.names(block * self.n + np.arange(self.n, dtype=np.int64))

    def people(self, block: int) -> BioSPopulation:
        """The B junk people of block ``block``."""
        rng = rng_for(self.seed, TAG_JUNK, block)
        return BioSPopulation.from_names(self.seed, self.block_names(block), rng)

    def block_layouts(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Template choices and sentence orders [B, 6] of the junk people of block ``block``."""
        return layouts(self.n, self.seed, TAG_JUNK_LAYOUT, block)

    def _block(self, exposure: int) -> Callable[[int], Document]:
        """Renders junk person p (0 <= p < B) of block ``exposure``."""
        pop = self.people(exposure)
        if self._renderer is None:
            self._renderer = BioSRenderer(pop, "online")
        renderer = self._renderer.for_population(pop)
        tmpl, order = (a.tolist() for a in self.block_layouts(exposure))
        return lambda p: renderer.render(p, tmpl[p], order[p])

    def documents(self, exposure: int, people: np.ndarray) -> Iterator[Document]:
        if self._cached is None or self._cached[0] != exposure:
            self._cached = (exposure, self._block(exposure))
        render = self._cached[1]
        base = exposure * self.n
        for p in people.tolist():
            doc = render(p)
            doc.person = base + p
            yield doc


class RandomBioDJunkSource(RandomJunkSource):
    """Endless random bioD junk, as `RandomJunkSource`: junk people over the useful people's
    chunk sets (same K, C, D, L, T), with fresh values and sentence orders keyed by (seed, e)."""

    def __init__(self, seed: int, useful: BioDPopulation):
        super().__init__(seed, useful.name)
        self.useful = useful

    def people(self, block: int) -> BioDPopulation:
        rng = rng_for(self.seed, TAG_JUNK, block)
        return self.useful.with_people(self.block_names(block), rng)

    def block_orders(self, block: int) -> np.ndarray:
        """Sentence orders [B, K] of the junk people of block ``block``."""
        return biod_orders(self.n, self.useful.params.k, self.seed, TAG_JUNK_LAYOUT, block)

    def _block(self, exposure: int) -> Callable[[int], Document]:
        renderer = BioDRenderer(self.people(exposure))
        orders = self.block_orders(exposure)
        return lambda p: renderer.render(p, orders[p])


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


def population_source(
    people: Population, seed: int, *, eval_: bool = False, tag: int | None = None
) -> BioSSource | BioDSource:
    """The (online) bioS or the bioD documents of ``people``, whichever they are."""
    if isinstance(people, BioDPopulation):
        return BioDSource(people, seed, eval_=eval_, tag=tag)
    return BioSSource(people, "online", seed, eval_=eval_, tag=tag)


def make_useful_source(people: Population, seed: int, domain: str, *, eval_: bool = False):
    """The useful people's biographies (training or evaluation), marked when ``domain`` says."""
    source = population_source(people, seed, eval_=eval_)
    return TokenPrefixedSource(source, DOMAIN_TOKEN) if domain == "useful" else source


def make_junk_source(
    junk: str,
    seed: int,
    useful: Population,
    junk_people: Population | None,
    domain: str,
    renderer: BioSRenderer | None = None,
):
    """The junk biographies: random people never among the ``useful`` people (of their kind),
    or ``junk_people`` cycled; marked when ``domain`` says. ``renderer`` shares prepared bioS
    tables (optional)."""
    if junk == "repetitive":
        source = population_source(junk_people, seed, tag=TAG_JUNK_LAYOUT)
    elif isinstance(useful, BioDPopulation):
        source = RandomBioDJunkSource(seed, useful)
    else:
        source = RandomJunkSource(seed, useful.name, renderer)
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
        dataset.population,
        dataset.extras.get(JUNK_POPULATION),
        params["domain"],
    )


# ----------------------------------------------------------------------------- generation


def check_mixture(
    n: int,
    ratio: int,
    junk: str,
    domain: str,
    junk_n: int,
    biod: BioDParams | None = None,
) -> None:
    """Validate a mixture (of useful bioD people with parameters ``biod`` when given)."""
    require(1 <= n <= P.N0 // 2, "--n", f"must be between 1 and N0/2 = {P.N0 // 2:,}; got {n}")
    require(
        ratio >= 1, "--ratio", f"must be a positive integer (junk tokens per useful); got {ratio}"
    )
    require(junk in JUNK_KINDS, "--junk", f"must be one of {', '.join(JUNK_KINDS)}; got {junk!r}")
    require(domain in DOMAINS, "--domain", f"must be one of {', '.join(DOMAINS)}; got {domain!r}")
    require(1 <= junk_n <= P.N0 - n, "--junk-n", f"must be between 1 and N0 - N; got {junk_n}")
    if biod is not None:
        check_biod_params(biod)


def useful_biod_params(
    n: int,
    useful: str,
    k: int | None,
    c: int | None,
    d: int | None,
    l: int | None,  # noqa: E741
    t: int | None,
) -> BioDParams | None:
    """The useful bioD(N, K, C, D, L, T) of a mixture (None for bioS): all five of K, C, D, L, T
    with ``useful="biod"``, none of them otherwise."""
    kinds = ", ".join(USEFUL_KINDS)
    require(useful in USEFUL_KINDS, "--useful", f"must be one of {kinds}; got {useful!r}")
    given = {"--k": k, "--c": c, "--d": d, "--l": l, "--t": t}
    for flag, value in given.items():
        if useful == "biod":
            require(value is not None, flag, "is required with --useful biod")
        else:
            require(value is None, flag, "is a bioD parameter: give it with --useful biod")
    return BioDParams(n, k, c, d, l, t) if useful == "biod" else None


def _junk_population(useful: Population, junk_n: int, seed: int) -> Population:
    """The fixed people of repetitive junk: names disjoint from the useful people's, attributes
    drawn like theirs (bioD: over their chunk sets), from the junk population's own stream."""
    if isinstance(useful, BioSPopulation):
        return BioSPopulation.sample(junk_n, seed, exclude=useful.name, tag=TAG_JUNK_POPULATION)
    rng = rng_for(seed, TAG_JUNK_POPULATION)
    return useful.with_people(sample_names(rng, junk_n, useful.name), rng)


def _name_part_texts() -> list[str]:
    """Every name part as random junk renders it (over a run it reaches every one)."""
    pools = P.load_pools()
    return [*pools.first, *(" " + m for m in pools.middle), *(" " + x for x in pools.last)]


def _train_tokenizer(
    docs: list[Document], useful_src: BioSSource | BioDSource, vocab: int, kind: str
) -> KTokenizer:
    """The mixture's tokenizer: trained on useful and junk documents plus every name part (and
    bioS every pool value), bioD symbols kept whole; both markers reserved."""
    markers = [DOMAIN_TOKEN, JUNK_TOKEN]
    if isinstance(useful_src, BioSSource):
        texts = training_texts(docs, pool_texts(names=True))
        return KTokenizer.train(texts, vocab_size=vocab, kind=kind, special_tokens=markers)
    symbols = useful_src.renderer.symbols()
    return KTokenizer.train(
        training_texts(docs, _name_part_texts()),
        vocab_size=vocab + len(symbols),
        kind=kind,
        special_tokens=markers,
        symbols=symbols,
    )


def _used_tokens(
    tok: KTokenizer, useful_src: BioSSource | BioDSource, junk_src, junk: str
) -> set[int]:
    """Tokens the mixture can hold: the useful documents' (bioS: every template form), and the
    junk's: repetitive junk its documents; random junk, over a run, every name part and value."""
    if isinstance(useful_src, BioSSource):
        used = used_tokens_bios(useful_src, tok)
    else:
        used = document_tokens(useful_src, tok)
    if junk == "random":
        for text in [*_name_part_texts(), *useful_src.renderer.value_pieces()]:
            used.update(tok.piece_ids(text))
    else:
        used |= document_tokens(junk_src, tok)
    return used


def check_junk(
    n: int,
    ratio: int,
    junk: str,
    seed: int,
    *,
    domain: str = "none",
    junk_n: int = REPETITIVE_N,
    useful: str = "bios",
    k: int | None = None,
    c: int | None = None,
    d: int | None = None,
    l: int | None = None,  # noqa: E741
    t: int | None = None,
    vocab: int = 2048,
    tokenizer: str = "bpe",
) -> BioDParams | None:
    """Refuse bad arguments of `build_junk`; returns the useful bioD(N, K, C, D, L, T) (None for
    useful bioS)."""
    shape = useful_biod_params(n, useful, k, c, d, l, t)
    check_mixture(n, ratio, junk, domain, junk_n, shape)
    check_tokenizer_args(tokenizer, vocab)
    return shape


def build_junk(
    n: int,
    ratio: int,
    junk: str,
    seed: int,
    *,
    domain: str = "none",
    junk_n: int = REPETITIVE_N,
    useful: str = "bios",
    k: int | None = None,
    c: int | None = None,
    d: int | None = None,
    l: int | None = None,  # noqa: E741
    t: int | None = None,
    vocab: int = 2048,
    tokenizer: str = "bpe",
    progress: Progress = None,
) -> tuple[dict, Population, KTokenizer, dict]:
    """Sample the useful people -- bioS(N), identical to ``build_bios(N, seed)``'s, or with
    ``useful="biod"`` bioD(N, k, c, d, l, t), identical to ``build_biod``'s -- and, for
    repetitive junk, the junk population; train the tokenizer; compute the manifest."""
    args = dict(domain=domain, junk_n=junk_n, useful=useful, k=k, c=c, d=d, l=l, t=t)
    shape = check_junk(n, ratio, junk, seed, **args, vocab=vocab, tokenizer=tokenizer)
    say(progress, "sampling populations")
    people = BioSPopulation.sample(n, seed) if shape is None else BioDPopulation.sample(shape, seed)
    useful_src = population_source(people, seed)
    extras: dict = {}
    junk_pop = None
    if junk == "repetitive":
        junk_pop = extras[JUNK_POPULATION] = _junk_population(people, junk_n, seed)
    renderer = useful_src.renderer if isinstance(useful_src, BioSSource) else None
    junk_src = make_junk_source(junk, seed, people, junk_pop, "none", renderer)
    docs = list(useful_src.documents(0, np.arange(min(n, TOKENIZER_SAMPLE))))
    junk_docs = list(junk_src.documents(0, np.arange(min(junk_src.n, TOKENIZER_SAMPLE))))
    say(progress, "training tokenizer")
    tok = _train_tokenizer(docs + junk_docs, useful_src, vocab, tokenizer)
    say(progress, "counting used tokens")
    used = _used_tokens(tok, useful_src, junk_src, junk)
    marker = {"useful": DOMAIN_TOKEN, "junk": JUNK_TOKEN}.get(domain)
    if marker:
        used.add(tok.hf.token_to_id(marker))
    params: dict = {"n": n, "ratio": ratio, "junk": junk, "domain": domain}
    if shape is not None:  # absent: bioS (the manifests of bioS mixtures are unchanged)
        params.update(useful="biod", k=k, c=c, d=d, l=l, t=t)
    if junk == "repetitive":
        params["junk_n"] = junk_n
    if marker == DOMAIN_TOKEN:
        docs = list(
            TokenPrefixedSource(useful_src, DOMAIN_TOKEN).documents(0, np.arange(len(docs)))
        )
    if shape is None:
        bits, attributes = bios_bits(n), list(ATTRIBUTES)
    else:
        bits, attributes = biod_bits(n, k, c, d, l, t), biod_attributes(k)
    manifest = make_manifest("junk", params, seed, bits, tok, used, docs, attributes)
    if shape is None:
        manifest["templates"] = template_counts()
    kind_name = "bioS" if shape is None else "bioD"
    manifest["mixture"] = {
        "useful_token_fraction": 1 / (1 + ratio),
        "window_pattern": "window k is useful iff k % (ratio + 1) == 0",
        "marker_token": marker,
        "junk_people": "drawn on the fly, never a useful name"
        if junk == "random"
        else f"{kind_name}({junk_n}) cycled",
    }
    return manifest, people, tok, extras


# ----------------------------------------------------------------------------- the family


def _useful_kind(manifest: dict) -> str:
    """What the useful people are, and so the measurement: "bios" (when absent) or "biod"."""
    return manifest["params"].get("useful", "bios")


def _load(path: Path, manifest: dict) -> tuple[Population, dict]:
    """The useful people, and a repetitive mixture's junk people (of the same kind)."""
    population = BioDPopulation if _useful_kind(manifest) == "biod" else BioSPopulation
    extras = {}
    if (path / JUNK_POPULATION).is_file():
        extras[JUNK_POPULATION] = population.load(path / JUNK_POPULATION)
    return population.load(path / POPULATION), extras


def _source(dataset, *, eval_: bool, eval_seed: int):
    """The useful people (with the domain token when it marks them); training keyed by the
    dataset seed, evaluation by ``eval_seed``."""
    return useful_source(dataset, eval_seed if eval_ else dataset.manifest["seed"], eval_=eval_)


FAMILY = Family("junk", check_junk, build_junk, _load, _source, measure=_useful_kind)
