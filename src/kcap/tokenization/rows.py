"""One sequence per row: the training stream of random strings (Morris et al. protocol).

E exposures (epochs) of M fixed token sequences; exposure e visits every sequence once, in a
permutation keyed by (seed, e), and each visit is one window row ``<|eos|> x_1 .. x_S`` on its
own: no packing, so a sequence is always seen from its start, exactly as the measurement scores
it. The state is three integers (exposure, position, windows), so resuming is exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kcap.data.bios import rng_for
from kcap.data.documents import SEQUENCE
from kcap.tokenization.stream import TAG_ORDER, Window


class SequenceStream:
    """Yields one `Window` of ``S + 1`` tokens per sequence visit, E times every sequence."""

    def __init__(
        self,
        sequences: np.ndarray,
        eos_id: int,
        *,
        exposures: int,
        seed: int,
        state: dict | None = None,
    ):
        self.sequences = np.asarray(sequences, dtype=np.int64)
        self.eos_id = eos_id
        self.exposures = exposures
        self.seed = seed
        self.window = self.sequences.shape[1]
        self.counts = np.zeros(len(self.sequences), dtype=np.int64)
        self._perm: tuple[int, np.ndarray] | None = None
        self.exposure = self.position = self.windows = 0
        self._labels = np.full(self.window + 1, SEQUENCE, dtype=np.int64)
        self._labels[0] = -1
        if state is not None:
            self.load_state_dict(state)

    def state_dict(self) -> dict:
        return {"exposure": self.exposure, "position": self.position, "windows": self.windows}

    def render_in_workers(self, workers: int) -> None:
        """Nothing to render: the rows are tokens already (the streams' common surface)."""

    def load_state_dict(self, d: dict) -> None:
        self.exposure, self.position, self.windows = d["exposure"], d["position"], d["windows"]

    def stats(self) -> dict:
        return {"sequences": len(self.sequences), "tokens_per_row": self.window}

    def permutation(self, exposure: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != exposure:
            order = rng_for(self.seed, TAG_ORDER, exposure).permutation(len(self.sequences))
            self._perm = (exposure, order)
        return self._perm[1]

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        if self.exposure >= self.exposures:
            raise StopIteration
        i = int(self.permutation(self.exposure)[self.position])
        ids = np.empty(self.window + 1, dtype=np.int64)
        ids[0] = self.eos_id
        ids[1:] = self.sequences[i]
        people = np.full(self.window + 1, i, dtype=np.int64)
        people[0] = -1
        self.counts[i] += 1
        self.position += 1
        if self.position == len(self.sequences):
            self.exposure, self.position = self.exposure + 1, 0
        self.windows += 1
        return Window(ids, people, self._labels.copy())

    def count_windows(self) -> int:
        return len(self.sequences) * self.exposures
