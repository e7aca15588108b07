"""Token ids of documents by vectorised gathers over pre-tokenised pieces.

`PieceTokens` encodes every piece of a `kcap.data.piece_rows` table once, through the same
per-piece cache the per-document path uses (`KTokenizer.piece_ids`, which `encode_pieces`
concatenates), into flat numpy arrays: token ids, token labels, and each piece's length and
end. `PieceTokens.render` then turns a block of piece rows into the stream's tokens (each
document's pieces' tokens, then ``<|eos|>``) with a handful of numpy operations and no Python per
document. The per-document path encodes a document as the concatenation of its pieces' tokens
(pieces split at pre-tokenizer boundaries), so the two give the same ids, labels and people
exactly; ``tests/test_gather.py`` checks it on every family. `piece_tokens` caches them per
tokenizer and table: streams of one process (a mixture's two, a resumed one) share them.
"""

from __future__ import annotations

import itertools

import numpy as np

from kcap.data.piece_rows import Table, by_identity
from kcap.tokenization.tokenizer import KTokenizer


class PieceTokens:
    """The tokens of every piece of ``table``; piece ``len(table)`` is ``<|eos|>`` (label -1) and
    index -1 (`kcap.data.piece_rows.EMPTY`) an empty piece with no tokens."""

    def __init__(self, table: Table, tok: KTokenizer):
        encoded = [tok.piece_ids(text) for text, _ in table]
        lengths = [*map(len, encoded), 1, 0]
        self.eos = len(table)
        self.lengths = np.array(lengths, dtype=np.int64)
        self.ends = np.cumsum(self.lengths)  # each piece's tokens end here in ``ids``
        flat = itertools.chain(itertools.chain.from_iterable(encoded), [tok.eos_id])
        self.ids = np.fromiter(flat, dtype=np.int64, count=int(self.lengths.sum()))
        labels = np.array([label for _, label in table] + [-1, -1], dtype=np.int64)
        self.labels = np.repeat(labels, self.lengths)

    def document_lengths(self, rows: np.ndarray) -> np.ndarray:
        """Tokens of each document [D] (eos excluded)."""
        return self.lengths[rows].sum(axis=1)

    def render(
        self, persons: np.ndarray, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids, people and labels of the documents of ``rows`` [D, W] (of ``persons``
        [D]), each followed by ``<|eos|>`` (person -1, label -1)."""
        d = len(rows)
        if d == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty.copy(), empty.copy()
        pieces = np.concatenate([rows, np.full((d, 1), self.eos, dtype=rows.dtype)], axis=1)
        flat = pieces.ravel()
        length = self.lengths[flat]
        end = np.cumsum(length)
        # token j of the block, k tokens before its piece's end there, is k tokens before the
        # piece's end in ``ids``
        source = np.repeat(self.ends[flat] - end, length)
        source += np.arange(int(end[-1]))
        doc_end = end[pieces.shape[1] - 1 :: pieces.shape[1]]  # each document's eos, plus one
        people = np.repeat(np.asarray(persons, dtype=np.int64), np.diff(doc_end, prepend=0))
        people[doc_end - 1] = -1
        return self.ids[source], people, self.labels[source]


# by tokenizer fingerprint: runs that load the same tokenizer (a pack's members, a sweep
# worker's runs) tokenise the pieces once; a process meets few tokenizers, and at most 8 are kept
_CACHE: dict[str, dict] = {}


def piece_tokens(table: Table, tok: KTokenizer) -> PieceTokens:
    """The `PieceTokens` of ``table`` under ``tok`` (cached by the table's identity and the
    tokenizer's fingerprint)."""
    if tok.fingerprint not in _CACHE and len(_CACHE) >= 8:
        _CACHE.pop(next(iter(_CACHE)))
    return by_identity(
        _CACHE.setdefault(tok.fingerprint, {}), table, lambda: PieceTokens(table, tok)
    )
