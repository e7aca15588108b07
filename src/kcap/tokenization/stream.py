"""The exposure-exact training stream (SPEC §3).

Exposure e of the run visits every person once, in a random permutation keyed by (seed, e); each
visit renders that person's biography for exposure e (a pure function of seed, person, e), from
the dataset's `kcap.data.family.DocumentSource`. The
documents are joined with ``<|eos|>`` (one also opens the stream) and cut into windows of
``window + 1`` tokens that overlap by one token, so every token after the first is predicted
exactly once. The last window is padded with ``-1`` (ignored by the loss).

The stream state (exposure, position, carried tokens) is tiny and is saved in checkpoints, so a
resumed run sees exactly the windows an uninterrupted run would: no replay, no skip.

Two paths render a block of documents, with the same tokens: by default, when the source has
piece rows (`kcap.data.piece_rows`: bioS, bioD and their junk), by vectorised gathers over
pre-tokenised pieces (`kcap.tokenization.gather`); otherwise (bioR's free text, or with
``vectorised=False``, the reference the tests compare against) document by document, through the
tokenizer's piece cache. The state does not say which path wrote it: either resumes the other's.

Every training stream (this one, `kcap.tokenization.mixture.MixtureStream`,
`kcap.tokenization.rows.SequenceStream`) offers the same surface to the trainer: iteration over
`Window`s, ``counts`` (realised exposures per person), ``count_windows()``, ``state_dict()`` /
``load_state_dict()``, ``stats()`` and ``render_in_workers(K)``: blocks rendered ahead by K
worker processes (`kcap.tokenization.loader`), the same windows as rendering in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from kcap.data.bios import rng_for
from kcap.data.family import DocumentSource
from kcap.data.piece_rows import PieceRows, piece_rows
from kcap.tokenization.gather import PieceTokens, piece_tokens
from kcap.tokenization.tokenizer import KTokenizer

TAG_ORDER = 3
PAD = -1


@dataclass
class StreamState:
    """Where the stream is: the next (exposure, position) to render and the tokens carried over
    from documents already rendered but not yet fully emitted (ids, people, labels)."""

    exposure: int = 0  # current exposure (0-based)
    position: int = 0  # next index in that exposure's permutation
    windows: int = 0  # windows emitted so far
    carry_ids: list[int] = field(default_factory=list)
    carry_people: list[int] = field(default_factory=list)
    carry_labels: list[int] = field(default_factory=list)
    started: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> StreamState:
        return cls(**d)


#: `Window.source` values: the dataset's own (useful) documents, or junk documents.
USEFUL, JUNK = 0, 1


@dataclass
class Window:
    """One window of ``window + 1`` tokens: ids, the person of each token (-1 for eos/pad), the
    piece label of each token (0 template, 1 name, 2.. values; -1 eos/pad) and which source the
    whole window comes from (`USEFUL` or `JUNK`; people of junk windows index junk people)."""

    ids: np.ndarray
    people: np.ndarray
    labels: np.ndarray
    source: int = USEFUL


class ExposureStream:
    """Yields `Window`s over E exposures of every person, resumable from a `StreamState`.

    ``vectorised`` renders by gathers when the source allows it (`vectorised_path` says whether
    it does); False keeps the per-document path (the reference)."""

    def __init__(
        self,
        source: DocumentSource,
        tokenizer: KTokenizer,
        *,
        exposures: int,
        seed: int,
        window: int = 512,
        state: StreamState | None = None,
        block: int = 512,
        order_tag: int = TAG_ORDER,
        vectorised: bool = True,
    ):
        self.source = source
        self.tok = tokenizer
        self.exposures = exposures
        self.seed = seed
        self.window = window
        self.block = block
        self.order_tag = order_tag
        self.counts = np.zeros(source.n, dtype=np.int64)  # realised exposures (this process)
        self._perm: tuple[int, np.ndarray] | None = None
        self.vectorised = vectorised
        self._gather: tuple[PieceRows, PieceTokens] | bool | None = None  # built on first use
        self.workers = 0  # processes rendering blocks ahead (`render_in_workers`)
        self._prefetch = None  # their `kcap.tokenization.loader.BlockPrefetch`
        self.state = state or StreamState()

    @property
    def state(self) -> StreamState:
        """The resumable state (the carried tokens are materialised from the working buffer)."""
        s = self._state
        s.carry_ids = self._ids[self._pos :].tolist()
        s.carry_people = self._people[self._pos :].tolist()
        s.carry_labels = self._labels[self._pos :].tolist()
        return s

    @state.setter
    def state(self, state: StreamState) -> None:
        self._state = state
        self._ids = np.asarray(state.carry_ids, dtype=np.int64)
        self._people = np.asarray(state.carry_people, dtype=np.int64)
        self._labels = np.asarray(state.carry_labels, dtype=np.int64)
        self._pos = 0

    def state_dict(self) -> dict:
        return self.state.to_dict()

    def load_state_dict(self, d: dict) -> None:
        self.state = StreamState.from_dict(d)
        if self.workers:  # the workers render ahead from the new position
            self.render_in_workers(self.workers)

    def render_in_workers(self, workers: int) -> None:
        """Render blocks ahead in ``workers`` processes (0: in this process), from the current
        state on; the windows are the same either way."""
        self.workers = workers
        if self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None
        if workers > 0 and self._state.exposure < self.exposures:
            from kcap.tokenization.loader import BlockPrefetch

            s = self._state
            self._prefetch = BlockPrefetch(self, s.exposure, s.position, workers)

    def stats(self) -> dict:
        """Stream facts for the run summary (none beyond the exposure counts)."""
        return {}

    def permutation(self, exposure: int) -> np.ndarray:
        """The order in which exposure ``exposure`` visits the people (keyed by seed, exposure)."""
        if self._perm is None or self._perm[0] != exposure:
            self._perm = (
                exposure,
                rng_for(self.seed, self.order_tag, exposure).permutation(self.source.n),
            )
        return self._perm[1]

    def _gathers(self) -> tuple[PieceRows, PieceTokens] | None:
        """The source's piece rows and their pre-tokenised pieces (built once), or None: the
        per-document path."""
        if self._gather is None:
            rows = piece_rows(self.source) if self.vectorised else None
            self._gather = False if rows is None else (rows, piece_tokens(rows.table, self.tok))
        return self._gather or None

    @property
    def vectorised_path(self) -> bool:
        """Whether blocks are rendered by vectorised gathers (else document by document)."""
        return self._gathers() is not None

    def block_tokens(self, exposure: int, position: int) -> tuple[np.ndarray, ...]:
        """Tokens (ids, people, labels) of the block of documents that starts at ``position``
        of exposure ``exposure``'s permutation, each document followed by ``<|eos|>``: a pure
        function of (seed, exposure, position), so worker processes can render blocks ahead
        (`kcap.tokenization.loader`)."""
        block = self.permutation(exposure)[position : position + self.block]
        gathers = self._gathers()
        if gathers is not None:
            rows, tokens = gathers
            return tokens.render(*rows.rows(exposure, block))
        return self._render_documents(exposure, block)

    def blocks_from(self, exposure: int, position: int) -> Iterator[tuple[int, int]]:
        """The (exposure, position) of every block from the given one to the stream's end."""
        n = self.source.n
        while exposure < self.exposures and n > 0:
            yield exposure, position
            position += self.block
            if position >= n:
                exposure, position = exposure + 1, 0

    def _render_block(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokens (ids, people, labels) of the next block of documents, each followed by
        ``<|eos|>`` (and the stream's opening ``<|eos|>`` before the first block)."""
        s = self._state
        opening = not s.started
        s.started = True
        perm = self.permutation(s.exposure)
        block = perm[s.position : s.position + self.block]
        if self._prefetch is not None and len(block):
            ids, people, labels = self._prefetch.take(s.exposure, s.position)
        else:
            ids, people, labels = self.block_tokens(s.exposure, s.position)
        if opening:
            ids, people, labels = (
                np.insert(ids, 0, self.tok.eos_id),
                np.insert(people, 0, -1),
                np.insert(labels, 0, -1),
            )
        self.counts[block] += 1  # a slice of a permutation: no person twice
        s.position += len(block)
        if s.position >= len(perm):
            s.exposure, s.position = s.exposure + 1, 0
        return ids, people, labels

    def _render_documents(
        self, exposure: int, block: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The per-document path: render each document and encode it through the piece cache."""
        eos = self.tok.eos_id
        ids: list[int] = []
        people: list[int] = []
        labels: list[int] = []
        encode = self.tok.encode_pieces
        for doc in self.source.documents(exposure, block):
            doc_ids, doc_labels, _ = encode(doc.pieces)
            ids += doc_ids
            ids.append(eos)
            people += [doc.person] * len(doc_ids)
            people.append(-1)
            labels += doc_labels
            labels.append(-1)
        return tuple(np.asarray(a, dtype=np.int64) for a in (ids, people, labels))

    def _fill(self, need: int) -> None:
        """Extend the working buffer until it holds ``need`` tokens or the data is exhausted."""
        parts = []
        have = len(self._ids) - self._pos
        while have < need and self._state.exposure < self.exposures:
            part = self._render_block()
            parts.append(part)
            have += len(part[0])
        if self._prefetch is not None and self._state.exposure >= self.exposures:
            self._prefetch.close()  # every block is in: stop the workers
            self._prefetch = None
        if not parts and self._state.started:
            return
        if not self._state.started:  # an empty stream still opens with eos
            parts.append(self._render_block())
        rest = slice(self._pos, None)
        self._ids = np.concatenate([self._ids[rest], *(p[0] for p in parts)])
        self._people = np.concatenate([self._people[rest], *(p[1] for p in parts)])
        self._labels = np.concatenate([self._labels[rest], *(p[2] for p in parts)])
        self._pos = 0

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        return self.take()

    def take(self, size: int | None = None) -> Window:
        """The next window, holding at most ``size`` real tokens (default ``window + 1``; a
        mixture cuts junk windows to the length of the last useful one). Raises StopIteration
        when at most one token is left."""
        n = self.window + 1
        size = n if size is None else min(size, n)
        self._fill(size)
        have = len(self._ids) - self._pos
        if have <= 1:
            raise StopIteration
        take = min(size, have)
        a = self._pos
        if take == n:  # a full window: plain copies
            ids = self._ids[a : a + n].copy()
            people = self._people[a : a + n].copy()
            labels = self._labels[a : a + n].copy()
        else:
            ids = np.full(n, PAD, dtype=np.int64)
            people = np.full(n, -1, dtype=np.int64)
            labels = np.full(n, -1, dtype=np.int64)
            ids[:take] = self._ids[a : a + take]
            people[:take] = self._people[a : a + take]
            labels[:take] = self._labels[a : a + take]
        self._pos += take - 1  # the last token is also the first of the next window
        self._state.windows += 1
        return Window(ids, people, labels)

    def count_tokens(self) -> int:
        """Exact number of tokens the full stream holds: from the source's length tables when it
        has them (bioS, bioD), else by a dry pass over every document (over its piece rows when
        the stream renders by gathers)."""
        total = 1  # the opening eos
        lengths = getattr(self.source, "token_lengths", None)
        if lengths is not None:
            for e in range(self.exposures):
                total += int(lengths(self.tok, e).sum()) + self.source.n
            return total
        gathers = self._gathers()
        for e in range(self.exposures):
            perm = self.permutation(e)
            for start in range(0, len(perm), self.block * 16):
                people = perm[start : start + self.block * 16]
                if gathers is not None:
                    rows, tokens = gathers
                    total += int(tokens.document_lengths(rows.rows(e, people)[1]).sum())
                    total += len(people)
                    continue
                for doc in self.source.documents(e, people):
                    total += sum(len(self.tok.piece_ids(p[0])) for p in doc.pieces) + 1
        return total

    def count_windows(self) -> int:
        """Exact number of windows: each covers ``window`` new tokens after the first."""
        return -(-(self.count_tokens() - 1) // self.window)
