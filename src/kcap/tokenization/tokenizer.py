"""Tokenizers trained locally with Hugging Face `tokenizers`, and the span-to-token rule.

Two kinds: ``bpe`` (byte-level BPE, GPT-2 pre-tokenization, the default) and ``word`` (one token
per word, number or punctuation mark; for tiny studies). Both reserve ``<|eos|>`` and any domain
tokens as special tokens and keep bioD alphabet symbols whole. A third, ``symbols``, is built
rather than trained: one token per symbol plus ``<|eos|>`` (random strings). `encode_pieces`
encodes a labelled document piece by piece through a cache (pieces always split at pre-tokenizer
boundaries), which is what makes the training stream fast; tests check it equals encoding the
whole text.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|eos|>"
KINDS = ("bpe", "word")
_WORD_PATTERN = r"<t\d+>|'s|[A-Za-z]+|\d+|[^\sA-Za-z\d]"
#: Entries kept in each piece cache; past this the cache starts over, so free text (bioR), whose
#: pieces rarely repeat, cannot grow memory without bound.
CACHE_LIMIT = 1 << 20


def token_range(text: str, offsets: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """The tokens of the value ``text[start:end]``, as a half-open index range (SPEC §3).

    A token belongs to the value when its character range overlaps the value's span extended by
    the value's leading space: a token " Princeton" belongs, and so does a lone " " token that BPE
    left before the value. ``offsets`` is [T, 2] of (char_start, char_end) per token, sorted.
    """
    if start > 0 and text[start - 1] == " ":
        start -= 1
    starts, ends = offsets[:, 0], offsets[:, 1]
    first = int(np.searchsorted(ends, start, side="right"))  # first token ending after start
    last = int(np.searchsorted(starts, end, side="left"))  # tokens starting before end
    return first, max(first, last)


class KTokenizer:
    """A trained tokenizer plus a per-piece token cache."""

    def __init__(self, hf: Tokenizer, kind: str):
        self.hf = hf
        self.kind = kind
        self.eos_id = hf.token_to_id(EOS)
        self._cache: dict[str, tuple[int, ...]] = {}
        self._labelled: dict[tuple[str, int, int], tuple[tuple[int, ...], ...]] = {}

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of the whole tokenizer: equal fingerprints encode every text alike."""
        return hashlib.sha256(self.hf.to_str().encode()).hexdigest()

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        *,
        vocab_size: int,
        kind: str = "bpe",
        special_tokens: Sequence[str] = (),
        symbols: Sequence[str] = (),
    ) -> KTokenizer:
        """Train on ``texts``; ``symbols`` (bioD alphabet) are added as whole tokens."""
        if kind not in KINDS:
            raise ValueError(f"tokenizer kind must be one of {', '.join(KINDS)}; got {kind!r}")
        specials = [EOS, *special_tokens]
        if kind == "bpe":
            hf = Tokenizer(models.BPE())
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            hf.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=max(vocab_size - len(symbols), 256 + len(specials)),
                special_tokens=specials,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        else:
            hf = Tokenizer(models.WordLevel(unk_token="<|unk|>"))
            hf.pre_tokenizer = pre_tokenizers.Sequence(
                [
                    pre_tokenizers.WhitespaceSplit(),
                    pre_tokenizers.Split(Regex(_WORD_PATTERN), "isolated"),
                ]
            )
            hf.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
            trainer = trainers.WordLevelTrainer(
                vocab_size=10**9, special_tokens=[*specials, "<|unk|>"], show_progress=False
            )
        hf.train_from_iterator(texts, trainer)
        if symbols:
            hf.add_tokens([AddedToken(s, lstrip=True, normalized=False) for s in symbols])
        return cls(hf, kind)

    @classmethod
    def for_symbols(cls, symbols: Sequence[str]) -> KTokenizer:
        """The trivial tokenizer of a symbol alphabet: symbol i is token i, ``<|eos|>`` is last.

        Symbols are matched whole (the text of a sequence is its symbols concatenated); nothing
        is trained, so the vocabulary is exactly ``len(symbols) + 1``.
        """
        vocab = {s: i for i, s in enumerate(symbols)}
        if len(vocab) != len(symbols) or EOS in vocab:
            raise ValueError("symbols must be distinct and must not include the eos token")
        vocab[EOS] = len(symbols)
        hf = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
        pattern = "|".join(sorted(map(re.escape, vocab), key=len, reverse=True))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), "isolated")
        hf.add_special_tokens([EOS])
        return cls(hf, "symbols")

    def save(self, path: Path) -> None:
        self.hf.save(str(path))
        meta = {"kind": self.kind}
        Path(path).with_suffix(".meta.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: Path) -> KTokenizer:
        meta = json.loads(Path(path).with_suffix(".meta.json").read_text())
        return cls(Tokenizer.from_file(str(path)), meta["kind"])

    def encode(self, text: str) -> tuple[list[int], np.ndarray]:
        """Token ids and [T, 2] character offsets of ``text``."""
        enc = self.hf.encode(text, add_special_tokens=False)
        return enc.ids, np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def piece_ids(self, text: str) -> tuple[int, ...]:
        """Token ids of one document piece (cached)."""
        ids = self._cache.get(text)
        if ids is None:
            ids = tuple(self.hf.encode(text, add_special_tokens=False).ids)
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[text] = ids
        return ids

    def encode_pieces(
        self, pieces: Iterable[tuple[str, int, int]]
    ) -> tuple[list[int], list[int], list[int]]:
        """Token ids of a labelled document, with each token's piece label and chunk index."""
        ids: list[int] = []
        labels: list[int] = []
        index: list[int] = []
        cache = self._labelled
        for piece in pieces:
            hit = cache.get(piece)
            if hit is None:
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                toks = self.piece_ids(piece[0])
                hit = cache[piece] = (toks, (piece[1],) * len(toks), (piece[2],) * len(toks))
            ids += hit[0]
            labels += hit[1]
            index += hit[2]
        return ids, labels, index
