"""What a dataset family is: a `Family` (check, build, load, source, measure) and the
`DocumentSource` its datasets render documents through.

Each family is one module of `kcap.data` that ends with ``FAMILY = Family(...)``: bioS
(`kcap.data.bios`), bioD (`kcap.data.biod`), junk mixtures (`kcap.data.junk`), bioR
(`kcap.data.bior`) and random strings (`kcap.data.random_strings`). `kcap.data.dataset` registers
them by kind and dispatches on a manifest's ``kind``. A new family is one such module and a
``kcap.data.dataset.register(FAMILY)``; ``tests/pairs.py`` is a toy one, trained and measured
end to end by ``tests/test_families.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kcap.data.documents import Document

#: The measurements there are (`kcap.measure.measure` dispatches on them): the bioS bound, the
#: bioD bound, memorised random-string bits.
MEASURE_KINDS = ("bios", "biod", "random")


class DocumentSource(Protocol):
    """What the stream and the measure read from a dataset: N people and their documents at
    any exposure (a pure function of the exposure: any document can be rendered on its own).

    A source may also offer ``token_lengths(tok, exposure) -> int array [N]`` (every person's
    document length, eos excluded); the stream then counts a run without rendering it. And a
    source whose documents are drawn from a fixed set of pieces may have piece rows
    (`kcap.data.piece_rows`); the stream then renders it by vectorised gathers."""

    n: int

    def documents(self, exposure: int, people: np.ndarray) -> Iterator[Document]:
        """The documents of ``people`` (in that order) at exposure ``exposure``."""
        ...


@dataclass(frozen=True)
class Family:
    """One dataset family: its manifest ``kind`` and what the registry asks of it.

    - ``check(**args)``: refuse bad arguments (a `kcap.errors.KcapError` naming the flag), before
      any work; ``args`` are ``build``'s.
    - ``build(**args, progress=None)``: generate the dataset in memory (it runs ``check`` first):
      ``(manifest, population, tokenizer[, extras])``, for `kcap.data.build.write_dataset`;
      ``extras`` maps further file names to objects with ``save(path)``.
    - ``load(path, manifest)``: the population and the extras (file name -> object) read back
      from a dataset directory.
    - ``source(dataset, *, eval_, eval_seed)``: the `DocumentSource` of a loaded dataset, for
      training or for evaluation (with the evaluation seed).
    - ``measure``: the measurement its datasets get, one of `MEASURE_KINDS`, or a function of
      the manifest that says which.
    """

    kind: str
    check: Callable[..., None]
    build: Callable[..., tuple]
    load: Callable[[Path, dict], tuple[Any, dict]]
    source: Callable[..., DocumentSource]
    measure: str | Callable[[dict], str]

    def measure_kind(self, manifest: dict) -> str:
        """Which measurement a dataset of this family with this manifest gets."""
        return self.measure if isinstance(self.measure, str) else self.measure(manifest)
