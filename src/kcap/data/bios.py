"""bioS(N): synthetic biographies of N people with uniformly random attributes (SPEC §2).

A population is N distinct names drawn without replacement from the 400·400·1000 name space and
independent uniform attributes. Its renderer turns (person, template choices, sentence order) into
a labelled `Document`; which templates and order an exposure uses is drawn by `layouts`, a pure
function of (seed, stream tag, exposure) so any document can be re-created on its own.
`BioSSource` renders a population per exposure (the stream's `DocumentSource`), `bios_bits`
counts its bits, and `build_bios` samples bioS(N), trains its tokenizer and writes its manifest;
``FAMILY`` is the bioS family the dataset registry (`kcap.data.dataset`) knows.

Variants: ``online`` (fresh templates and sentence order every exposure), ``simple`` (one fixed
biography per person) and ``fullname`` (the full name in every sentence instead of pronouns).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from kcap.data import pools as P
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
from kcap.data.documents import GENDER, NAME, OTHER, Document, Piece
from kcap.data.family import Family
from kcap.data.templates import ATTRIBUTES, LIT, PRONOUN, VALUE, load_templates
from kcap.data.templates import NAME as SEG_NAME
from kcap.errors import require
from kcap.tokenization.tokenizer import KTokenizer

VARIANTS = ("online", "simple", "fullname")
#: Piece label of each attribute, in `ATTRIBUTES` order (2..7).
ATTRIBUTE_LABELS = tuple(range(2, 8))
#: Stream tags mixed into RNG keys so that no two kinds of draw ever share a random stream.
#: 3 is the stream order (`kcap.tokenization.stream.TAG_ORDER`); 4.. serve junk data and bioR.
#: (Keys differing only by trailing zeros collide in numpy's SeedSequence: give each purpose its
#: own tag rather than a sub-key.)
TAG_POPULATION, TAG_TRAIN, TAG_EVAL = 0, 1, 2
TAG_JUNK_POPULATION, TAG_JUNK, TAG_JUNK_LAYOUT, TAG_JUNK_NAMES, TAG_JUNK_ORDER = 4, 5, 6, 7, 8
TAG_BIOR_PROMPT, TAG_BIOR_PICK, TAG_BIOR_FALLBACK = 9, 10, 11
TAG_EVAL_GENDER = 12  # bioS-fullname evaluation: template redraws that state the gender


def rng_for(*key: int) -> np.random.Generator:
    """A numpy Generator keyed by a tuple of non-negative ints (independent streams per key)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


@dataclass
class BioSPopulation:
    """N people: name index into the N0 name space and attribute indices (all int arrays)."""

    seed: int
    name: np.ndarray  # int64 in [0, N0)
    gender: np.ndarray  # 0 = he, 1 = she
    date: np.ndarray  # month*28*200 + day*200 + year_index, in [0, 67200)
    city: np.ndarray
    university: np.ndarray
    major: np.ndarray
    employer: np.ndarray

    @property
    def n(self) -> int:
        return len(self.name)

    @classmethod
    def sample(
        cls,
        n: int,
        seed: int,
        *,
        exclude: np.ndarray | None = None,
        tag: int = TAG_POPULATION,
    ) -> BioSPopulation:
        """Draw n people; names without replacement (and not in ``exclude``), attributes iid.

        ``tag`` selects the random stream, so a second population drawn with the same seed (the
        repetitive junk of a junk mixture) is independent of the first.
        """
        rng = rng_for(seed, tag)
        name = sample_names(rng, n, exclude)
        return cls.from_names(seed, name, rng)

    @classmethod
    def from_names(cls, seed: int, name: np.ndarray, rng: np.random.Generator) -> BioSPopulation:
        """People with the given names and attributes drawn iid uniformly from ``rng``."""
        n = len(name)
        return cls(
            seed=seed,
            name=name,
            gender=rng.integers(0, P.N_GENDERS, n, dtype=np.int8),
            date=rng.integers(0, P.N_DATES, n, dtype=np.int32),
            city=rng.integers(0, P.N_CITIES, n, dtype=np.int16),
            university=rng.integers(0, P.N_UNIVERSITIES, n, dtype=np.int16),
            major=rng.integers(0, P.N_MAJORS, n, dtype=np.int16),
            employer=rng.integers(0, P.N_COMPANIES, n, dtype=np.int16),
        )

    def save(self, path: Path) -> None:
        np.savez(path, seed=self.seed, **{k: getattr(self, k) for k in _ARRAYS})

    @classmethod
    def load(cls, path: Path) -> BioSPopulation:
        with np.load(path) as z:
            return cls(seed=int(z["seed"]), **{k: z[k] for k in _ARRAYS})

    def name_parts(self, i: int) -> tuple[str, str, str]:
        return P.name_parts(self.name[i])

    def full_name(self, i: int) -> str:
        return " ".join(self.name_parts(i))

    def values(self, i: int) -> tuple[str, ...]:
        """The six attribute values of person i as strings, in `ATTRIBUTES` order."""
        pools = P.load_pools()
        month, rest = divmod(int(self.date[i]), P.N_DAYS * P.N_YEARS)
        day, year = divmod(rest, P.N_YEARS)
        employer = int(self.employer[i])
        return (
            P.format_date(month, day, year),
            pools.cities[int(self.city[i])],
            pools.universities[int(self.university[i])],
            pools.majors[int(self.major[i])],
            pools.companies[employer],
            pools.company_hq[employer],
        )


_ARRAYS = ("name", "gender", "date", "city", "university", "major", "employer")


def sample_names(
    rng: np.random.Generator,
    n: int,
    exclude: np.ndarray | None = None,
    pool: int | None = None,
) -> np.ndarray:
    """n distinct name indices drawn uniformly from `pools.name_space` (N0 names, or pool³ with
    every name pool cut to its first ``pool`` entries), none of them in ``exclude``."""
    space = P.name_space(pool)
    taken = 0 if exclude is None else len(exclude)
    if not 0 < n <= space - taken:
        raise ValueError(f"n must be in [1, {space - taken}], got {n}")
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:  # rejection: draw extra, drop duplicates/excluded, keep draw order
        draw = rng.integers(0, space, int((n - len(out)) * 1.05) + 16, dtype=np.int64)
        cand = np.concatenate([out, P.pooled_name(draw, pool)])
        _, first = np.unique(cand, return_index=True)
        keep = np.zeros(len(cand), dtype=bool)
        keep[first] = True
        if exclude is not None:
            keep &= ~np.isin(cand, exclude)
        out = cand[keep][:n]
    return out


def name_part_lengths(tok) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens of each name part as rendered: first names [400, 2] (without / with a leading
    space), " middle" [400] and " last" [1000]. Index them with `pools.split_name`."""
    pools = P.load_pools()
    n = lambda text: len(tok.piece_ids(text))  # noqa: E731
    return (
        np.array([[n(f), n(" " + f)] for f in pools.first], dtype=np.int64),
        np.array([n(" " + m) for m in pools.middle], dtype=np.int64),
        np.array([n(" " + x) for x in pools.last], dtype=np.int64),
    )


def layouts(n_people: int, *key: int) -> tuple[np.ndarray, np.ndarray]:
    """Template choices [n, 6] and sentence orders [n, 6] for every person, keyed by ``key``.

    For training the key is (seed, TAG_TRAIN, exposure); ``simple`` uses exposure 0 always;
    evaluation uses (eval_seed, TAG_EVAL, 0). Orders are permutations of 0..5.
    """
    rng = rng_for(*key)
    counts = np.array([len(load_templates()[a]) for a in ATTRIBUTES])
    tmpl = rng.integers(0, counts, size=(n_people, len(ATTRIBUTES))).astype(np.int16)
    order = rng.permuted(np.tile(np.arange(6, dtype=np.int8), (n_people, 1)), axis=1)
    return tmpl, order


def stating_gender(
    tmpl: np.ndarray, has_pronoun: Sequence[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Template choices [n, 6] in which every row has a template with a pronoun: a row with none
    redraws all its templates from ``rng`` until it has one. The redraws depend on templates
    only, never on the person, so the evaluation stays a valid generator's template draw."""
    tmpl = tmpl.copy()
    counts = np.array([len(h) for h in has_pronoun])
    columns = range(tmpl.shape[1])

    def silent(rows: np.ndarray) -> np.ndarray:
        return ~np.any([has_pronoun[a][tmpl[rows, a]] for a in columns], axis=0)

    rows = np.flatnonzero(silent(np.arange(len(tmpl))))
    while len(rows):
        tmpl[rows] = rng.integers(0, counts, size=(len(rows), len(counts)))
        rows = rows[silent(rows)]
    return tmpl


@dataclass(frozen=True)
class RenderTables:
    """What rendering bioS prepares once, the same for every population and variant: each
    template's segments for every (gender, subject mode, leading space) -- ``compiled[attr]
    [template][gender][subject_is_name][lead]`` -- and the name and value pieces of every pool
    entry (first names as (without, with) a leading space; values by attribute). Shared by every
    renderer (read-only); `kcap.data.piece_rows` indexes them too."""

    compiled: list
    first_pieces: list[tuple[Piece, Piece]]
    middle_pieces: list[Piece]
    last_pieces: list[Piece]
    attribute_pieces: list[list[Piece]]


@cache
def render_tables() -> RenderTables:
    """The package's `RenderTables` (built once per process)."""
    templates = load_templates()
    compiled = [
        [
            [
                [[_pieces(t.compile(g, bool(s), bool(lead))) for lead in (0, 1)] for s in (0, 1)]
                for g in (0, 1)
            ]
            for t in templates[a]
        ]
        for a in ATTRIBUTES
    ]
    pools = P.load_pools()
    dates = [
        P.format_date(m, d, y)
        for m in range(P.N_MONTHS)
        for d in range(P.N_DAYS)
        for y in range(P.N_YEARS)
    ]
    pool_values = (
        dates,
        pools.cities,
        pools.universities,
        pools.majors,
        pools.companies,
        pools.company_hq,
    )
    return RenderTables(
        compiled=compiled,
        first_pieces=[((f, NAME, 0), (" " + f, NAME, 0)) for f in pools.first],
        middle_pieces=[(" " + m, NAME, 0) for m in pools.middle],
        last_pieces=[(" " + x, NAME, 0) for x in pools.last],
        attribute_pieces=[
            [(" " + v, label, 0) for v in values]
            for values, label in zip(pool_values, ATTRIBUTE_LABELS, strict=True)
        ],
    )


# token-count tables by tokenizer fingerprint (`BioSRenderer.length_tables`)
_LENGTH_TABLES: dict[str, tuple] = {}


class BioSRenderer:
    """Renders people of a population as labelled documents, for one variant.

    Everything that does not depend on the person is prepared once per process (`RenderTables`),
    so rendering a biography is a few list appends and making a renderer costs nothing.
    """

    def __init__(self, population: BioSPopulation, variant: str = "online"):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        self.population = population
        self.variant = variant
        self.tables = tables = render_tables()
        self.compiled = tables.compiled
        self.first_pieces = tables.first_pieces
        self.middle_pieces = tables.middle_pieces
        self.last_pieces = tables.last_pieces
        self.attribute_pieces = tables.attribute_pieces

    def length_tables(self, tok) -> tuple[np.ndarray, tuple, tuple]:
        """Token-count tables for `BioSSource.token_lengths` (cached per process and tokenizer:
        the members of a pack, or a sweep worker's runs, share them):
        template text [attr, template, gender, subject_is_name, lead] (literals and pronouns),
        name parts ([first, lead], [middle], [last]) and values (one array per attribute)."""
        cached = _LENGTH_TABLES.get(tok.fingerprint)
        if cached is not None:
            return cached
        n = lambda piece: len(tok.piece_ids(piece[0]))  # noqa: E731
        most = max(len(per_attr) for per_attr in self.compiled)
        fixed = np.zeros((len(self.compiled), most, 2, 2, 2), dtype=np.int64)
        for a, per_attr in enumerate(self.compiled):
            for t, per_t in enumerate(per_attr):
                for g, per_g in enumerate(per_t):
                    for s, per_s in enumerate(per_g):
                        for lead, segments in enumerate(per_s):
                            fixed[a, t, g, s, lead] = sum(
                                n(p) if k == LIT else n(p[0])
                                for k, p in segments
                                if k in (LIT, PRONOUN)
                            )
        names = name_part_lengths(tok)
        values = tuple(
            np.array([n(p) for p in pieces], dtype=np.int64) for pieces in self.attribute_pieces
        )
        if len(_LENGTH_TABLES) >= 8:  # a process meets few tokenizers; keep memory bounded
            _LENGTH_TABLES.clear()
        _LENGTH_TABLES[tok.fingerprint] = (fixed, names, values)
        return fixed, names, values

    def value_pieces(self) -> list[str]:
        """The text of every value piece any person can have (all pools, leading space)."""
        return [piece[0] for values in self.attribute_pieces for piece in values]

    def pronoun_templates(self) -> list[np.ndarray]:
        """Per attribute, which templates hold a pronoun when the subject is the full name (the
        fullname variant states the gender only through these)."""
        return [
            np.array([any(k == PRONOUN for k, _ in t[0][1][0]) for t in per_attr])
            for per_attr in self.compiled
        ]

    def for_population(self, population: BioSPopulation) -> BioSRenderer:
        """A renderer of another population sharing this one's prepared tables (cheap)."""
        other = copy.copy(self)
        other.population = population
        return other

    def render(self, person: int, tmpl: Sequence[int], order: Sequence[int]) -> Document:
        """One biography of ``person`` with template ``tmpl[a]`` per attribute, in ``order``
        (plain int sequences: a row of `layouts`, converted with ``tolist()``)."""
        pop = self.population
        g = int(pop.gender[person])
        first, middle, last = P.split_name(int(pop.name[person]))
        employer = int(pop.employer[person])
        value_index = (
            int(pop.date[person]),
            int(pop.city[person]),
            int(pop.university[person]),
            int(pop.major[person]),
            employer,
            employer,
        )
        fullname = self.variant == "fullname"
        compiled, values = self.compiled, self.attribute_pieces
        pieces: list[Piece] = []
        append = pieces.append
        gender_seen = False
        for pos, a in enumerate(order):
            lead = pos > 0
            for kind, piece in compiled[a][tmpl[a]][g][fullname or not lead][lead]:
                if kind == LIT:
                    append(piece)
                elif kind == VALUE:
                    append(values[a][value_index[a]])
                elif kind == SEG_NAME:
                    append(self.first_pieces[first][piece])
                    append(self.middle_pieces[middle])
                    append(self.last_pieces[last])
                else:  # a pronoun: the first one in the document carries the gender
                    append(piece[gender_seen])
                    gender_seen = True
        return Document(person, pieces)


def _pieces(segments: tuple) -> tuple:
    """Segments with their pieces pre-built: a literal's piece, a pronoun's (gender, other)
    pieces, and for a name whether it follows a space."""
    out = []
    for kind, text in segments:
        if kind == LIT:
            out.append((kind, (text, OTHER, 0)))
        elif kind == PRONOUN:
            out.append((kind, ((text, GENDER, 0), (text, OTHER, 0))))
        else:
            out.append((kind, bool(text)))
    return tuple(out)


# ----------------------------------------------------------------------------- bits


def bios_bits(n: int) -> dict[str, float]:
    """Bits of bioS(N) (SPEC §2): name = N·log2(N0/N), the names chosen among N0, and
    value = N·log2(S0), the attributes of every person."""
    name = n * math.log2(P.N0 / n)
    value = n * P.ATTRIBUTE_BITS
    return {"name": name, "value": value, "diversity": 0.0, "total": name + value}


# ----------------------------------------------------------------------------- source


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

    def layouts_at(self, exposure: int) -> tuple[np.ndarray, np.ndarray]:
        """Everyone's template choices and sentence orders [N, 6] at ``exposure`` (cached)."""
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
        tmpl, order = self.layouts_at(exposure)
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
        tmpl, order = self.layouts_at(exposure)
        render = self.renderer.render
        rows = zip(people.tolist(), tmpl[people].tolist(), order[people].tolist(), strict=True)
        for p, t, o in rows:
            yield render(p, t, o)


# ----------------------------------------------------------------------------- generation


def check_bios(
    n: int, seed: int, variant: str = "online", *, vocab: int = 2048, tokenizer: str = "bpe"
) -> None:
    """Refuse bad arguments of `build_bios` (a `KcapError` naming the flag)."""
    require(1 <= n <= P.N0, "--n", f"must be between 1 and N0 = {P.N0:,}; got {n}")
    require(
        variant in VARIANTS, "--variant", f"must be one of {', '.join(VARIANTS)}; got {variant!r}"
    )
    check_tokenizer_args(tokenizer, vocab)


def used_tokens_bios(source: BioSSource, tok: KTokenizer) -> set[int]:
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
    return used | document_tokens(source, tok)


def template_counts() -> dict[str, int]:
    """Templates per attribute (the manifest's ``templates``)."""
    return {a: len(t) for a, t in load_templates().items()}


def build_bios(
    n: int,
    seed: int,
    variant: str = "online",
    *,
    vocab: int = 2048,
    tokenizer: str = "bpe",
    progress: Progress = None,
) -> tuple[dict, BioSPopulation, KTokenizer]:
    """Sample bioS(N), train its tokenizer, and compute the manifest (nothing written)."""
    check_bios(n, seed, variant, vocab=vocab, tokenizer=tokenizer)
    say(progress, "sampling population")
    pop = BioSPopulation.sample(n, seed)
    source = BioSSource(pop, variant, seed)
    sample = np.arange(min(n, TOKENIZER_SAMPLE))
    docs = list(source.documents(0, sample))
    # A word-level tokenizer has no fallback: it must see every name part, not only the sample's.
    extra = pool_texts(names=tokenizer == "word")
    say(progress, "training tokenizer")
    tok = KTokenizer.train(training_texts(docs, extra), vocab_size=vocab, kind=tokenizer)
    say(progress, "counting used tokens")
    used = used_tokens_bios(source, tok)
    params = {"n": n, "variant": variant}
    manifest = make_manifest("bios", params, seed, bios_bits(n), tok, used, docs, list(ATTRIBUTES))
    manifest["templates"] = template_counts()
    return manifest, pop, tok


# ----------------------------------------------------------------------------- the family


def _load(path: Path, manifest: dict) -> tuple[BioSPopulation, dict]:
    return BioSPopulation.load(path / POPULATION), {}


def _source(dataset, *, eval_: bool, eval_seed: int) -> BioSSource:
    """Training: keyed by the dataset seed; evaluation: by ``eval_seed``. bioS-simple is
    evaluated on the biographies it trains on: its one biography per person is the whole
    distribution."""
    variant, seed = dataset.manifest["params"]["variant"], dataset.manifest["seed"]
    if variant == "simple":
        return BioSSource(dataset.population, variant, seed)
    return BioSSource(dataset.population, variant, eval_seed if eval_ else seed, eval_=eval_)


FAMILY = Family("bios", check_bios, build_bios, _load, _source, measure="bios")
