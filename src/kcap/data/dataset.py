"""A dataset on disk: manifest, population, tokenizer; and the document sources the stream reads.

``DIR/manifest.json`` says what the dataset is (kind, parameters, seed, exact bits by component,
vocabulary statistics); ``DIR/population.npz`` holds the sampled people (random strings: the
sequences) and ``DIR/tokenizer.json`` the tokenizer trained on it. Template documents are never
stored: they are re-rendered, on the fly and deterministically, for every exposure. Two kinds
add a file: a repetitive junk mixture its junk people (``junk_population.npz``), bioR its
LM-written texts (``rewrites.npz``). Kinds: bios, biod (here), junk (`kcap.data.junk`), bior
(`kcap.data.bior`), random (`kcap.data.random_strings`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kcap.data import pools as P
from kcap.data.biod import BioDParams, BioDPopulation, BioDRenderer, biod_orders
from kcap.data.bios import (
    TAG_EVAL,
    TAG_EVAL_GENDER,
    TAG_TRAIN,
    VARIANTS,
    BioSPopulation,
    BioSRenderer,
    layouts,
    name_part_lengths,
    rng_for,
    stating_gender,
)
from kcap.data.bits import biod_bits, bios_bits
from kcap.data.documents import Document
from kcap.data.random_strings import RandomStrings, RandomStringSource
from kcap.data.templates import ATTRIBUTES, LIT, PRONOUN, PRONOUN_FORMS, load_templates
from kcap.errors import KcapError, require
from kcap.tokenization.tokenizer import KINDS, KTokenizer

if TYPE_CHECKING:
    from kcap.data.bior import Rewrites

MANIFEST, POPULATION, TOKENIZER = "manifest.json", "population.npz", "tokenizer.json"
DEFAULT_EVAL_SEED = 12345
TOKENIZER_SAMPLE = 4000  # documents used to train the tokenizer


class BioSSource:
    """bioS documents per exposure; layouts are drawn once per exposure for everyone.

    ``tag`` overrides the layout stream (repetitive junk uses its own, so its template choices
    are independent of the useful people's)."""

    def __init__(
        self,
        population: BioSPopulation,
        variant: str,
        seed: int,
        *,
        eval_: bool = False,
        tag: int | None = None,
    ):
        self.renderer = BioSRenderer(population, variant)
        self.n = population.n
        self.seed = seed
        self.tag = tag if tag is not None else TAG_EVAL if eval_ else TAG_TRAIN
        self.fixed = variant == "simple" or eval_
        # bioS-fullname states the gender only in templates with a pronoun: its evaluation
        # biographies are drawn to have one, so the gender the training stream holds is read
        self.state_gender = eval_ and variant == "fullname"
        self._cached: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None

    def _layouts(self, exposure: int) -> tuple[np.ndarray, np.ndarray]:
        e = 0 if self.fixed else exposure
        if self._cached is None or self._cached[0] != e:
            tmpl, order = layouts(self.n, self.seed, self.tag, e)
            if self.state_gender:
                redraws = rng_for(self.seed, TAG_EVAL_GENDER)
                tmpl = stating_gender(tmpl, self.renderer.pronoun_templates(), redraws)
            self._cached = (e, (tmpl, order))
        return self._cached[1]

    def token_lengths(self, tok: KTokenizer, exposure: int) -> np.ndarray:
        """Tokens in every person's document at ``exposure`` (eos excluded), from lookup tables
        in a few vectorised operations: the stream counts a run's exact length without
        rendering it (a dry pass would cost as much as the run's data generation)."""
        fixed, names, values = self.renderer.length_tables(tok)
        tmpl, order = self._layouts(exposure)
        pop = self.renderer.population
        rows = np.arange(self.n)
        g = pop.gender.astype(np.int64)
        first, middle, last = P.split_name(pop.name)
        fullname = self.renderer.variant == "fullname"
        total = np.zeros(self.n, dtype=np.int64)
        for j in range(order.shape[1]):
            a = order[:, j].astype(np.int64)
            subject_is_name, lead = int(j == 0 or fullname), int(j > 0)
            total += fixed[a, tmpl[rows, a], g, subject_is_name, lead]
            if subject_is_name:
                total += names[0][first, lead] + names[1][middle] + names[2][last]
        employer = pop.employer.astype(np.int64)
        for lengths, index in zip(
            values, (pop.date, pop.city, pop.university, pop.major, employer, employer), strict=True
        ):
            total += lengths[index.astype(np.int64)]
        return total

    def documents(self, exposure: int, people: np.ndarray) -> Iterator[Document]:
        tmpl, order = self._layouts(exposure)
        render = self.renderer.render
        rows = zip(people.tolist(), tmpl[people].tolist(), order[people].tolist(), strict=True)
        for p, t, o in rows:
            yield render(p, t, o)


class BioDSource:
    """bioD documents per exposure (sentence order re-drawn every exposure).

    ``tag`` overrides the order stream, as for `BioSSource` (repetitive bioD junk)."""

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

    def _orders(self, exposure: int) -> np.ndarray:
        e = 0 if self.fixed else exposure
        if self._cached is None or self._cached[0] != e:
            self._cached = (e, biod_orders(self.n, self.k, self.seed, self.tag, e))
        return self._cached[1]

    def token_lengths(self, tok: KTokenizer, exposure: int) -> np.ndarray:
        """Tokens in every person's document at ``exposure`` (eos excluded), from tables: only
        which attribute comes first changes a document's length."""
        base, heads = self._length_tables(tok)
        first_attr = self._orders(exposure)[:, 0]
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
            [[piece(f"'s ID {a + 1} is"), piece(f" Their ID {a + 1} is")] for a in range(self.k)]
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
        orders = self._orders(exposure)
        for p in people.tolist():
            yield self.renderer.render(p, orders[p])


#: Dataset kinds, and the measurement each one gets (`Dataset.measure_kind`): the bioS bound for
#: bioS and bioR; the bioD bound; memorised random bits; a junk mixture gets its useful data's
#: (``params.useful``: bioS when absent, or bioD).
DATASET_KINDS = ("bios", "biod", "junk", "bior", "random")
_MEASURE_KIND = {"bios": "bios", "biod": "biod", "bior": "bios", "random": "random"}
JUNK_POPULATION, REWRITES = "junk_population.npz", "rewrites.npz"


@dataclass
class Dataset:
    """A loaded dataset directory.

    ``population`` holds what the measurement scores: bioS/bioR/junk the (useful) people, bioD
    its population, random strings the sequences. A junk mixture of repetitive junk also has its
    ``junk_population`` (bioS or bioD, like its useful people); bioR has its stored ``rewrites``.
    """

    path: Path
    manifest: dict
    population: BioSPopulation | BioDPopulation | RandomStrings
    tokenizer: KTokenizer
    junk_population: BioSPopulation | BioDPopulation | None = None
    rewrites: Rewrites | None = None

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def measure_kind(self) -> str:
        """Which measurement applies: "bios", "biod" or "random"."""
        return _measure_kind_of(self.manifest)

    @property
    def n(self) -> int:
        return self.population.n

    def source(self, *, eval_: bool = False, eval_seed: int = DEFAULT_EVAL_SEED):
        """The document source for training (keyed by the dataset seed) or evaluation.

        bioS-simple is evaluated on the biographies it trains on: they are its distribution.
        For a junk mixture this is the useful people (with the domain token when it marks them),
        for bioR the stored rewrites (evaluation: each person's held-out rewrite)."""
        seed = eval_seed if eval_ else self.manifest["seed"]
        if self.kind == "bios":
            variant = self.manifest["params"]["variant"]
            if variant == "simple":  # its one biography per person is the whole distribution
                return BioSSource(self.population, variant, self.manifest["seed"])
            return BioSSource(self.population, variant, seed, eval_=eval_)
        if self.kind == "biod":
            return BioDSource(self.population, seed, eval_=eval_)
        if self.kind == "junk":
            from kcap.data.junk import useful_source

            return useful_source(self, seed, eval_=eval_)
        if self.kind == "bior":
            from kcap.data.bior import BioRSource

            return BioRSource(self.rewrites, self.manifest["seed"], eval_=eval_)
        return RandomStringSource(self.population)

    def junk_source(self):
        """The junk documents of a junk mixture (an endless source; see `kcap.data.junk`)."""
        from kcap.data.junk import junk_source

        return junk_source(self)

    @property
    def bits(self) -> dict[str, float]:
        return self.manifest["bits"]


def _measure_kind_of(manifest: dict) -> str:
    """The measurement a dataset with this manifest gets (see `DATASET_KINDS`)."""
    if manifest["kind"] == "junk":
        return manifest["params"].get("useful", "bios")
    return _MEASURE_KIND[manifest["kind"]]


def load_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    manifest_path = path / MANIFEST
    require(manifest_path.is_file(), "dataset", f"no dataset at {path} (missing {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    kind = manifest.get("kind")
    require(kind in DATASET_KINDS, "dataset", f"{path}: unknown dataset kind {kind!r}")
    tok = KTokenizer.load(path / TOKENIZER)
    if kind == "random":
        return Dataset(path, manifest, RandomStrings.load(path / POPULATION), tok)
    population = BioDPopulation if _measure_kind_of(manifest) == "biod" else BioSPopulation
    people = population.load(path / POPULATION)
    junk = rewrites = None
    if (path / JUNK_POPULATION).is_file():
        junk = population.load(path / JUNK_POPULATION)
    if kind == "bior":
        from kcap.data.bior import Rewrites

        rewrites = Rewrites.load(path / REWRITES)
    return Dataset(path, manifest, people, tok, junk_population=junk, rewrites=rewrites)


# ----------------------------------------------------------------------------- generation


def check_bios_args(n: int, variant: str) -> None:
    require(1 <= n <= P.N0, "--n", f"must be between 1 and N0 = {P.N0:,}; got {n}")
    require(
        variant in VARIANTS, "--variant", f"must be one of {', '.join(VARIANTS)}; got {variant!r}"
    )


def check_biod_args(p: BioDParams) -> None:
    require(1 <= p.n <= P.N0, "--n", f"must be between 1 and N0 = {P.N0:,}; got {p.n}")
    for name, value in (("--k", p.k), ("--c", p.c), ("--d", p.d), ("--l", p.l)):
        require(value >= 1, name, f"must be a positive integer; got {value}")
    require(p.t >= 2, "--t", f"must be at least 2; got {p.t}")
    require(p.d <= p.t**p.l, "--d", f"must be at most T^L = {p.t}^{p.l}; got {p.d}")


def check_tokenizer_args(kind: str, vocab: int) -> None:
    require(kind in KINDS, "--tokenizer", f"must be one of {', '.join(KINDS)}; got {kind!r}")
    require(vocab >= 300, "--vocab", f"must be at least 300 (bytes + specials); got {vocab}")


def prepare_out_dir(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` without ``force``, and an ``out`` we cannot create."""
    if out.exists():
        require(out.is_dir(), "--out", f"{out} exists and is not a directory")
        require(force or not any(out.iterdir()), "--out", f"{out} is not empty (use --force)")
    parent = out.parent if not out.exists() else out
    while not parent.exists():
        parent = parent.parent
    require(parent.is_dir() and _writable(parent), "--out", f"{out} is not writable")


def _writable(path: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def pool_texts(*, names: bool) -> list[str]:
    """Every attribute value of the pools (and, with ``names``, every name part) as tokenizer
    training text, so that every value the data can hold is in the vocabulary."""
    pools = P.load_pools()
    values = [
        *pools.cities,
        *pools.universities,
        *pools.majors,
        *pools.companies,
        *pools.company_hq,
    ]
    # Every pronoun form, often enough that BPE makes each (with its leading space) one token:
    # the measure reads the gender across the forms at the first pronoun (measure.knowledge).
    pronouns = [" ".join(w for forms in PRONOUN_FORMS.values() for w in forms)] * 1000
    return (
        [*values, *pronouns, *pools.first, *pools.middle, *pools.last]
        if names
        else [
            *values,
            *pronouns,
        ]
    )


def _training_texts(docs: list[Document], extra: list[str]) -> Iterator[str]:
    yield from (d.text for d in docs)
    yield from extra


def build_bios(
    n: int,
    seed: int,
    variant: str = "online",
    *,
    vocab: int = 2048,
    tokenizer: str = "bpe",
    progress: Callable[[str], None] | None = None,
) -> tuple[dict, BioSPopulation, KTokenizer]:
    """Sample bioS(N), train its tokenizer, and compute the manifest (nothing written)."""
    check_bios_args(n, variant)
    check_tokenizer_args(tokenizer, vocab)
    _say(progress, "sampling population")
    pop = BioSPopulation.sample(n, seed)
    source = BioSSource(pop, variant, seed)
    sample = np.arange(min(n, TOKENIZER_SAMPLE))
    docs = list(source.documents(0, sample))
    # A word-level tokenizer has no fallback: it must see every name part, not only the sample's.
    extra = pool_texts(names=tokenizer == "word")
    _say(progress, "training tokenizer")
    tok = KTokenizer.train(_training_texts(docs, extra), vocab_size=vocab, kind=tokenizer)
    _say(progress, "counting used tokens")
    used = _used_tokens_bios(source, tok)
    params = {"n": n, "variant": variant}
    manifest = _manifest("bios", params, seed, bios_bits(n), tok, used, docs)
    manifest["templates"] = {a: len(t) for a, t in load_templates().items()}
    return manifest, pop, tok


def build_biod(
    p: BioDParams,
    seed: int,
    *,
    vocab: int = 2048,
    tokenizer: str = "bpe",
    progress: Callable[[str], None] | None = None,
) -> tuple[dict, BioDPopulation, KTokenizer]:
    """Sample bioD(N, K, C, D, L, T), train its tokenizer, and compute the manifest."""
    check_biod_args(p)
    check_tokenizer_args(tokenizer, vocab)
    _say(progress, "sampling population")
    pop = BioDPopulation.sample(p, seed)
    source = BioDSource(pop, seed)
    docs = list(source.documents(0, np.arange(min(p.n, TOKENIZER_SAMPLE))))
    _say(progress, "training tokenizer")
    symbols = source.renderer.symbols()
    tok = KTokenizer.train(
        (d.text for d in docs), vocab_size=vocab + len(symbols), kind=tokenizer, symbols=symbols
    )
    _say(progress, "counting used tokens")
    used = _used_tokens_biod(source, tok)
    params = {"n": p.n, "k": p.k, "c": p.c, "d": p.d, "l": p.l, "t": p.t}
    bits = biod_bits(p.n, p.k, p.c, p.d, p.l, p.t)
    return _manifest("biod", params, seed, bits, tok, used, docs), pop, tok


def _used_tokens_bios(source: BioSSource, tok: KTokenizer) -> set[int]:
    """Tokens of every template segment in every form, plus every person's rendered document."""
    used: set[int] = {tok.eos_id}
    for per_attr in source.renderer.compiled:
        for per_template in per_attr:
            for per_gender in per_template:
                for per_mode in per_gender:
                    for segments in per_mode:
                        for kind, piece in segments:
                            if kind in (LIT, PRONOUN):
                                text = piece[0] if kind == LIT else piece[0][0]
                                used.update(tok.piece_ids(text))
    for doc in source.documents(0, np.arange(source.n)):
        used.update(tok.encode_pieces(doc.pieces)[0])
    return used


def _used_tokens_biod(source: BioDSource, tok: KTokenizer) -> set[int]:
    """Tokens of every person's rendered document."""
    used: set[int] = {tok.eos_id}
    for doc in source.documents(0, np.arange(source.n)):
        used.update(tok.encode_pieces(doc.pieces)[0])
    return used


def _manifest(
    kind, params, seed, bits, tok: KTokenizer, used: set[int], docs, attributes=None
) -> dict:
    lengths = [len(tok.encode_pieces(d.pieces)[0]) + 1 for d in docs[:1000]]
    if attributes is None:
        attributes = (
            list(ATTRIBUTES) if kind == "bios" else [f"ID {i + 1}" for i in range(params["k"])]
        )
    return {
        "kind": kind,
        "params": params,
        "seed": seed,
        "bits": bits,
        "vocab": {
            "tokenizer": tok.kind,
            "vocab_size": tok.vocab_size,
            "used_tokens": len(used),
            "mean_tokens_per_document": float(np.mean(lengths)),
        },
        "attributes": attributes,
    }


def write_dataset(
    out: Path,
    manifest: dict,
    population,
    tok: KTokenizer,
    extras: dict | None = None,
    *,
    force: bool,
) -> None:
    """Write atomically: into a sibling temp dir, then rename over ``out``.

    ``extras`` maps further file names to objects with a ``save(path)`` method (the repetitive
    junk population, bioR rewrites); the ``build_*`` functions return them as a fourth item."""
    prepare_out_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        population.save(tmp / POPULATION)
        for name, obj in (extras or {}).items():
            obj.save(tmp / name)
        tok.save(tmp / TOKENIZER)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _say(progress, msg: str) -> None:
    if progress:
        progress(msg)


__all__ = ["Dataset", "KcapError", "build_biod", "build_bios", "load_dataset", "write_dataset"]
