"""The junk mixture stream: useful and junk windows interleaved in an exact token ratio.

With ratio r, window k of the run is useful iff k % (r + 1) == 0, so every useful window is
followed by r junk windows: each window is all useful or all junk, and a batch of r + 1 windows
holds one useful window. The useful windows are exactly the windows of the useful exposure
stream (E exposures of every useful person, nothing else), the junk windows those of a separate
endless junk stream. After the last, partial, useful window the r junk windows are cut to its
length, so over the whole run junk tokens = r × useful tokens exactly (counting predicted
tokens, i.e. all but the first of each window). The state is both streams' states plus three
integers, so a resumed run sees exactly the same windows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from kcap.tokenization.stream import JUNK, PAD, ExposureStream, Window


class MixtureStream:
    """Interleaves ``useful`` and ``junk`` exposure streams, r junk windows per useful one."""

    def __init__(
        self, useful: ExposureStream, junk: ExposureStream, ratio: int, state: dict | None = None
    ):
        if ratio < 1 or int(ratio) != ratio:
            raise ValueError(f"ratio must be a positive integer, got {ratio}")
        if useful.window != junk.window:
            raise ValueError("useful and junk streams must use the same window")
        self.useful, self.junk, self.ratio = useful, junk, int(ratio)
        self.window = useful.window
        self.windows = 0  # windows emitted
        self.last_take = self.window + 1  # real tokens in the latest useful window
        self.useful_tokens = 0  # predicted tokens emitted, by source
        self.junk_tokens = 0
        if state is not None:
            self.load_state_dict(state)

    @property
    def counts(self) -> np.ndarray:
        """Realised exposures of the useful people (junk people are not counted)."""
        return self.useful.counts

    @counts.setter
    def counts(self, value: np.ndarray) -> None:
        self.useful.counts = value

    def state_dict(self) -> dict:
        return {
            "windows": self.windows,
            "last_take": self.last_take,
            "useful_tokens": self.useful_tokens,
            "junk_tokens": self.junk_tokens,
            "useful": self.useful.state_dict(),
            "junk": self.junk.state_dict(),
        }

    def load_state_dict(self, d: dict) -> None:
        self.windows, self.last_take = d["windows"], d["last_take"]
        self.useful_tokens, self.junk_tokens = d["useful_tokens"], d["junk_tokens"]
        self.useful.load_state_dict(d["useful"])
        self.junk.load_state_dict(d["junk"])

    def render_in_workers(self, workers: int) -> None:
        """Render both streams' blocks ahead in ``workers`` processes each (0: in-process)."""
        self.useful.render_in_workers(workers)
        self.junk.render_in_workers(workers)

    def stats(self) -> dict:
        useful = (self.windows + self.ratio) // (self.ratio + 1)  # windows 0, r+1, 2(r+1), ...
        return {
            "ratio": self.ratio,
            "useful_tokens": self.useful_tokens,
            "junk_tokens": self.junk_tokens,
            "useful_windows": useful,
            "junk_windows": self.windows - useful,
        }

    def is_useful(self, k: int) -> bool:
        """Whether window k of the run is a useful window."""
        return k % (self.ratio + 1) == 0

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        if self.is_useful(self.windows):
            w = self.useful.take()  # StopIteration here ends the run
            take = int((w.ids != PAD).sum())
            self.last_take = take
            self.useful_tokens += take - 1
        else:
            w = self.junk.take(self.last_take)
            w.source = JUNK
            self.junk_tokens += int((w.ids != PAD).sum()) - 1
        self.windows += 1
        return w

    def count_windows(self) -> int:
        """Exact number of windows: r + 1 for every useful window."""
        return (self.ratio + 1) * self.useful.count_windows()
