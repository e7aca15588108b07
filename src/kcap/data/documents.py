"""Documents as labelled pieces, and the character spans derived from them.

A generated document is a list of pieces ``(text, label, index)``. Concatenated, the texts are the
document; a piece with a non-zero label is (part of) a knowledge value: the name, an attribute
value, the gender pronoun, or one bioD chunk. Piece boundaries are always pre-tokenizer boundaries
(a piece that follows a word starts with a space or punctuation), so a tokenizer may encode pieces
one by one, cache them, and get exactly the tokens of the whole text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Piece labels. 0 is template text; bioS/bioR use 1..8; a random string's symbols are 9; bioD
#: uses VALUE_BASE + attribute index.
OTHER, NAME = 0, 1
BIRTH_DATE, BIRTH_CITY, UNIVERSITY, MAJOR, EMPLOYER, WORK_CITY, GENDER = range(2, 9)
SEQUENCE = 9
VALUE_BASE = 16
LABEL_NAMES = {
    OTHER: "other",
    NAME: "name",
    BIRTH_DATE: "birth_date",
    BIRTH_CITY: "birth_city",
    UNIVERSITY: "university",
    MAJOR: "major",
    EMPLOYER: "employer",
    WORK_CITY: "work_city",
    GENDER: "gender",
    SEQUENCE: "sequence",
}


def label_name(label: int) -> str:
    """Human name of a piece label ("name", "birth_city", "id_3" for bioD attribute 3, ...)."""
    return LABEL_NAMES.get(label) or f"id_{label - VALUE_BASE + 1}"


@dataclass(frozen=True, slots=True)
class Span:
    """A character span ``text[start:end]`` holding one value (leading space excluded).

    ``index`` is the bioD chunk number within the value (0 for everything else).
    """

    label: int
    start: int
    end: int
    index: int = 0

    @property
    def kind(self) -> str:
        return label_name(self.label)


Piece = tuple[str, int, int]  # (text, label, index)


@dataclass(slots=True)
class Document:
    """One rendered document: the person it is about and its labelled pieces."""

    person: int
    pieces: list[Piece]

    @property
    def text(self) -> str:
        return "".join(p[0] for p in self.pieces)

    def spans(self) -> list[Span]:
        """Character spans of every value; adjacent pieces of one value merge into one span."""
        spans: list[Span] = []
        pos = 0
        for text, label, index in self.pieces:
            end = pos + len(text)
            if label != OTHER:
                start = pos + (len(text) - len(text.lstrip(" ")))
                last = spans[-1] if spans else None
                if last and last.label == label and last.index == index and last.end == pos:
                    spans[-1] = Span(label, last.start, end, index)
                else:
                    spans.append(Span(label, start, end, index))
            pos = end
        return spans

    def span(self, label: int, index: int = 0) -> Span | None:
        """The first span with this label (and chunk index), or None."""
        return next((s for s in self.spans() if s.label == label and s.index == index), None)


def from_spans(person: int, text: str, spans: Iterable[Span]) -> Document:
    """The labelled document of a free ``text`` whose values lie at ``spans`` (non-overlapping).

    As in rendered documents, the single space before a value joins the value's piece; when every
    value is bounded by non-word characters (what `kcap.data.bior` checks), piece boundaries are
    then pre-tokenizer boundaries and `Document.spans` gives back exactly ``spans``.
    """
    pieces: list[Piece] = []
    pos = 0
    for s in sorted(spans, key=lambda s: s.start):
        start = s.start - 1 if s.start - 1 >= pos and text[s.start - 1] == " " else s.start
        if start < pos:
            raise ValueError(f"overlapping spans in {text!r}")
        if start > pos:
            pieces.append((text[pos:start], OTHER, 0))
        pieces.append((text[start : s.end], s.label, s.index))
        pos = s.end
    if pos < len(text):
        pieces.append((text[pos:], OTHER, 0))
    return Document(person, pieces)
