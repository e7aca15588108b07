"""Documents as rows of piece indices: the vectorised form of the template renderers.

A template document (bioS, bioD, the junk of a mixture) is a sequence of pieces drawn from a
fixed, finite set: template texts and pronouns, name parts and pool values (bioS); sentence heads,
name parts and chunks (bioD); a marker token. A `PieceRows` lists that set once (``table``: the
(text, label) of each piece) and renders a block of people as an int matrix [D, W] of indices
into it, -1 where a document has fewer than W pieces. Row d holds, in order, exactly the pieces
(text and label) of the d-th document that ``source.documents(exposure, people)`` yields: the rows
read the very layouts and sentence orders the source draws (``layouts_at``, ``orders_at``, the
junk blocks), so no random draw is repeated, added or reordered.

`kcap.tokenization.gather` turns rows into token ids by gathers over the pre-tokenised pieces:
the fast path of the training stream. `piece_rows` gives the rows of a source, or None when its
documents are not drawn from a fixed piece set (bioR's free text) or its type is not one of those
below (a subclass, a new family); the stream renders those document by document. A source may
also offer ``piece_rows()`` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

import numpy as np

from kcap.data import pools as P
from kcap.data.biod import BioDPopulation, BioDSource, sentence_head
from kcap.data.bios import BioSPopulation, BioSSource, RenderTables, render_tables
from kcap.data.documents import NAME, OTHER, VALUE_BASE
from kcap.data.junk import RandomBioDJunkSource, RandomJunkSource, TokenPrefixedSource
from kcap.data.templates import LIT, PRONOUN, VALUE
from kcap.data.templates import NAME as SEG_NAME

#: The pieces of a table: (text, label); what a row index stands for.
Table = list[tuple[str, int]]
#: The index of no piece (a row's padding).
EMPTY = -1
#: Entries an identity cache keeps (tables and forms are shared by every stream of a process).
CACHED = 8
T = TypeVar("T")


def by_identity(cache: dict, key: object, make: Callable[[], T]) -> T:
    """``make()`` cached in ``cache`` by the identity of ``key`` (held, so that no other object
    takes its id while cached); past `CACHED` entries the oldest is dropped."""
    hit = cache.get(id(key))
    if hit is None or hit[0] is not key:
        hit = cache[id(key)] = (key, make())
        while len(cache) > CACHED:
            del cache[next(iter(cache))]
    return hit[1]


class PieceRows(Protocol):
    """A source's documents as rows of indices into ``table``."""

    table: Table

    def rows(self, exposure: int, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The person id of each document [D] (``Document.person``) and the piece rows [D, W]
        of ``people`` at ``exposure``."""
        ...


class _TableBuilder:
    """Collects a table: single pieces (deduplicated) and contiguous blocks (indexed by offset)."""

    def __init__(self) -> None:
        self.table: Table = []
        self._index: dict[tuple[str, int], int] = {}

    def add(self, piece: tuple) -> int:
        key = (piece[0], piece[1])
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(self.table)
            self.table.append(key)
        return i

    def block(self, pieces: Iterable[tuple]) -> int:
        start = len(self.table)
        self.table.extend((p[0], p[1]) for p in pieces)
        return start


# ----------------------------------------------------------------------------- bioS

# What a slot of a compiled bioS template form holds.
_NONE, _PIECE, _VALUE, _FIRST, _MIDDLE, _LAST = range(6)
# The person columns a slot adds to its base: none, the six values, 2·first, middle, last.
_ZERO, _VALUES, _FIRST2, _MIDDLE1, _LAST1 = 0, 1, 7, 8, 9


class BioSForms:
    """Every bioS template form as a row of slots, over a piece table, from the renderers'
    `kcap.data.bios.RenderTables` (`bios_forms` builds it once per process).

    A form is (attribute, template, gender, subject is the name, leading space, gender already
    stated): the compiled segments, one slot per piece (a name is three: first, middle, last),
    the first pronoun of a document carrying the gender label. The table holds the forms'
    literal and pronoun pieces, then every first name (without and with its leading space),
    middle name, last name and every attribute's values, as the renderers hold them. A slot's
    piece is ``base + person[column]`` (``person``: 0, the six value indices, 2·first, middle,
    last)."""

    def __init__(self, tables: RenderTables):
        b = _TableBuilder()
        compiled = tables.compiled
        self.templates = max(map(len, compiled))
        forms = [
            (self.form(a, t, g, s, lead), a, segments)
            for a, per_attr in enumerate(compiled)
            for t, per_t in enumerate(per_attr)
            for g, per_g in enumerate(per_t)
            for s, per_s in enumerate(per_g)
            for lead, segments in enumerate(per_s)
        ]
        self.width = max(sum(3 if k == SEG_NAME else 1 for k, _ in seg) for _, _, seg in forms)
        shape = (len(compiled) * self.templates * 8 * 2, self.width)  # the last bit: stated
        kind = np.full(shape, _NONE, dtype=np.int8)
        piece = np.full(shape, EMPTY, dtype=np.int64)  # a name's first slot: the lead
        attr = np.zeros(shape, dtype=np.int64)
        self.has_pronoun = np.zeros(shape[0] // 2, dtype=bool)
        for f, a, segments in forms:
            for stated in (0, 1):
                row, gender_piece = 2 * f + stated, stated  # which piece a pronoun takes
                attr[row] = a
                col = 0
                for k, p in segments:
                    if k == LIT:
                        kind[row, col], piece[row, col] = _PIECE, b.add(p)
                    elif k == VALUE:
                        kind[row, col] = _VALUE
                    elif k == SEG_NAME:
                        kind[row, col : col + 3] = (_FIRST, _MIDDLE, _LAST)
                        piece[row, col] = int(p)
                        col += 2
                    else:  # a pronoun: (gender, other) pieces; the document's first is gender
                        assert k == PRONOUN
                        kind[row, col], piece[row, col] = _PIECE, b.add(p[gender_piece])
                        gender_piece = 1
                        self.has_pronoun[f] = True
                    col += 1
        first = b.block(p for pair in tables.first_pieces for p in pair)
        middle = b.block(tables.middle_pieces)
        last = b.block(tables.last_pieces)
        values = np.array([b.block(v) for v in tables.attribute_pieces], dtype=np.int64)
        self.table = b.table
        kinds = [kind == k for k in (_VALUE, _FIRST, _MIDDLE, _LAST)]
        self.base = np.select(kinds, [values[attr], first + piece, middle, last], default=piece)
        self.column = np.select(kinds, [_VALUES + attr, _FIRST2, _MIDDLE1, _LAST1], _ZERO)

    def form(self, attribute, template, gender, subject, lead):
        """The index of a form, gender not yet stated (ints or broadcasting int arrays)."""
        return (((attribute * self.templates + template) * 2 + gender) * 2 + subject) * 2 + lead

    def rows(
        self,
        population: BioSPopulation,
        people: np.ndarray,
        tmpl: np.ndarray,
        order: np.ndarray,
        fullname: bool,
    ) -> np.ndarray:
        """Piece rows [D, 6W] of ``people`` of ``population`` with template choices ``tmpl``
        [D, 6] (by attribute) and sentence orders ``order`` [D, 6] (rows of `layouts`)."""
        pop, d = population, len(people)
        attr = order.astype(np.int64)  # [D, 6] the attribute of each sentence
        template = np.take_along_axis(tmpl, attr, axis=1)
        gender = pop.gender[people].astype(np.int64)[:, None]
        position = np.arange(attr.shape[1])
        subject = ((position == 0) | fullname).astype(np.int64)
        form = self.form(attr, template, gender, subject, (position > 0).astype(np.int64))
        has = self.has_pronoun[form]
        stated = np.cumsum(has, axis=1) > has  # a pronoun in an earlier sentence
        form = (2 * form + stated).ravel()
        width = attr.shape[1] * self.width
        person = np.zeros((d, _LAST1 + 1), dtype=np.int64)
        employer = pop.employer[people]
        for j, x in enumerate((pop.date, pop.city, pop.university, pop.major)):
            person[:, _VALUES + j] = x[people]
        person[:, _VALUES + 4] = person[:, _VALUES + 5] = employer
        first, middle, last = P.split_name(pop.name[people].astype(np.int64))
        person[:, _FIRST2], person[:, _MIDDLE1], person[:, _LAST1] = 2 * first, middle, last
        column = self.column[form].reshape(d, width)
        column += np.arange(0, d * person.shape[1], person.shape[1])[:, None]
        rows = self.base[form].reshape(d, width)
        rows += person.ravel()[column]
        return rows


_BIOS_FORMS: dict = {}


def bios_forms(tables: RenderTables) -> BioSForms:
    """The `BioSForms` of ``tables`` (cached: every bioS renderer shares one `RenderTables`)."""
    return by_identity(_BIOS_FORMS, tables, lambda: BioSForms(tables))


class BioSRows:
    """The rows of a `BioSSource` (any variant, training or evaluation)."""

    def __init__(self, source: BioSSource):
        self.source = source
        self.forms = bios_forms(source.renderer.tables)
        self.table = self.forms.table
        self.fullname = source.renderer.variant == "fullname"

    def rows(self, exposure: int, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tmpl, order = self.source.layouts_at(exposure)
        pop = self.source.renderer.population
        return people, self.forms.rows(pop, people, tmpl[people], order[people], self.fullname)


class RandomJunkRows:
    """The rows of random bioS junk (`RandomJunkSource`): exposure e is junk block e."""

    def __init__(self, source: RandomJunkSource):
        self.source = source
        self.forms = bios_forms(render_tables())  # what the source's renderers hold
        self.table = self.forms.table
        self._block: tuple[int, tuple] | None = None

    def rows(self, exposure: int, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._block is None or self._block[0] != exposure:
            block = (self.source.people(exposure), *self.source.block_layouts(exposure))
            self._block = (exposure, block)
        pop, tmpl, order = self._block[1]
        rows = self.forms.rows(pop, people, tmpl[people], order[people], False)
        return exposure * self.source.n + people, rows


# ----------------------------------------------------------------------------- bioD


class BioDForms:
    """The piece table of bioD documents over one population's chunk sets: first, middle and
    last names, the sentence heads of every attribute, the period, and every chunk of every
    attribute (chunk c of attribute a at ``chunks + a * D + c``). `biod_forms` caches it."""

    def __init__(self, population: BioDPopulation):
        b = _TableBuilder()
        pools = P.load_pools()
        self.k, self.d = population.params.k, population.params.d
        self.first = b.block((f, NAME) for f in pools.first)
        self.middle = b.block((" " + m, NAME) for m in pools.middle)
        self.last = b.block((" " + x, NAME) for x in pools.last)
        self.heads = np.array(
            [
                [b.add((sentence_head(a, opens), OTHER)) for opens in (False, True)]
                for a in range(self.k)
            ]
        )
        self.period = b.add((".", OTHER))
        self.chunks = b.block(
            (" " + population.chunk_text(a, c), VALUE_BASE + a)
            for a in range(self.k)
            for c in range(self.d)
        )
        self.table = b.table

    def rows(self, population: BioDPopulation, people: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Piece rows [D, 3 + K(C + 2)] of ``people`` with sentence orders ``order`` [D, K]."""
        d, k = len(people), self.k
        attr = order.astype(np.int64)
        first, middle, last = P.split_name(population.name[people].astype(np.int64))
        names = np.stack([self.first + first, self.middle + middle, self.last + last], axis=1)
        heads = self.heads[attr, (np.arange(k) == 0).astype(np.int64)[None, :]]
        chunks = self.chunks + self.d * attr[:, :, None] + population.values[people[:, None], attr]
        period = np.full((d, k, 1), self.period)
        sentences = np.concatenate([heads[:, :, None], chunks, period], axis=2)
        return np.concatenate([names, sentences.reshape(d, k * sentences.shape[2])], axis=1)


_BIOD_FORMS: dict = {}


def biod_forms(population: BioDPopulation) -> BioDForms:
    """The `BioDForms` of ``population``'s chunk sets (cached while they are the same array)."""
    return by_identity(_BIOD_FORMS, population.chunks, lambda: BioDForms(population))


class BioDRows:
    """The rows of a `BioDSource`."""

    def __init__(self, source: BioDSource):
        self.source = source
        self.forms = biod_forms(source.renderer.population)
        self.table = self.forms.table

    def rows(self, exposure: int, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = self.source.orders_at(exposure)[people]
        return people, self.forms.rows(self.source.renderer.population, people, order)


class RandomBioDJunkRows:
    """The rows of random bioD junk (`RandomBioDJunkSource`): exposure e is junk block e, over
    the useful people's chunk sets."""

    def __init__(self, source: RandomBioDJunkSource):
        self.source = source
        self.forms = biod_forms(source.useful)
        self.table = self.forms.table
        self._block: tuple[int, tuple] | None = None

    def rows(self, exposure: int, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._block is None or self._block[0] != exposure:
            block = (self.source.people(exposure), self.source.block_orders(exposure))
            self._block = (exposure, block)
        pop, order = self._block[1]
        return exposure * self.source.n + people, self.forms.rows(pop, people, order[people])


# ----------------------------------------------------------------------------- markers


_PREFIXED: dict[str, dict] = {}


class PrefixedRows:
    """The rows of a `TokenPrefixedSource`: its marker piece, then the wrapped source's row.
    The table is the wrapped one plus the marker (cached, so that it keeps one identity)."""

    def __init__(self, inner: PieceRows, token: str):
        self.inner = inner
        self.marker = len(inner.table)
        cache = _PREFIXED.setdefault(token, {})
        self.table = by_identity(cache, inner.table, lambda: [*inner.table, (token, OTHER)])

    def rows(self, exposure: int, people: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        persons, rows = self.inner.rows(exposure, people)
        marker = np.full((len(rows), 1), self.marker, dtype=rows.dtype)
        return persons, np.concatenate([marker, rows], axis=1)


_ROWS = {
    BioSSource: BioSRows,
    BioDSource: BioDRows,
    RandomJunkSource: RandomJunkRows,
    RandomBioDJunkSource: RandomBioDJunkRows,
}


def piece_rows(source) -> PieceRows | None:
    """The piece rows of ``source``, or None when it has none (render it document by document).

    Only the exact source types above qualify (a subclass may render differently), plus any
    source that offers ``piece_rows()`` itself."""
    own = getattr(source, "piece_rows", None)
    if own is not None:
        return own()
    if type(source) is TokenPrefixedSource:
        inner = piece_rows(source.source)
        return None if inner is None else PrefixedRows(inner, source.token)
    maker = _ROWS.get(type(source))
    return None if maker is None else maker(source)
