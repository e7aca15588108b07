"""Rendering the stream in worker processes: a torch `DataLoader` over the stream's blocks.

An exposure stream renders its documents in blocks (`ExposureStream.block_tokens`, a pure
function of seed, exposure and position). `BlockPrefetch` hands the blocks from a given one on
to K worker processes round-robin -- worker k renders blocks k, k + K, k + 2K, ... of the
global block sequence, disjoint shares of each exposure's permutation -- and the `DataLoader`
returns them in order, so the stream that consumes them cuts exactly the windows it would cut
rendering in-process: every person still gets exactly E exposures, and a resumed stream starts
the workers at its saved block.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def _as_is(item):
    """The DataLoader's collate step: leave the numpy arrays as they are."""
    return item


class _Blocks(IterableDataset):
    """The blocks of ``stream`` from (exposure, position) on; each worker renders its share.

    It holds the stream by a weak reference (a forked worker finds it in its copy of memory),
    so the stream -> prefetch -> loader -> dataset chain is no cycle: dropping the stream stops
    its workers at once, never later from a garbage collection inside a newer worker."""

    def __init__(self, stream, exposure: int, position: int):
        self.stream, self.exposure, self.position = weakref.ref(stream), exposure, position

    def __iter__(self) -> Iterator[tuple]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream = self.stream()
        for i, (e, pos) in enumerate(stream.blocks_from(self.exposure, self.position)):
            if i % workers == worker:  # as tensors: they travel in shared memory, not pickled
                tokens = np.stack(stream.block_tokens(e, pos))
                yield e, pos, torch.from_numpy(tokens)


class BlockPrefetch:
    """Blocks of ``stream`` rendered ahead by ``workers`` processes, taken in order."""

    def __init__(self, stream, exposure: int, position: int, workers: int, ahead: int = 4):
        self.workers = workers
        loader = DataLoader(
            _Blocks(stream, exposure, position),
            batch_size=None,
            num_workers=workers,
            prefetch_factor=ahead,
            collate_fn=_as_is,
            # fork: the workers inherit the stream (no pickling of tokenizer or pieces); they use
            # numpy only, never CUDA, so forking a process that holds a GPU context is safe
            multiprocessing_context="fork" if sys.platform == "linux" else None,
        )
        self._it = iter(loader)

    def take(self, exposure: int, position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tokens of the block at (exposure, position): the next one the workers made."""
        e, pos, tokens = next(self._it)
        if (e, pos) != (exposure, position):  # the order is the DataLoader's guarantee
            raise RuntimeError(f"block ({e}, {pos}) arrived where ({exposure}, {position}) was due")
        ids, people, labels = tokens.numpy()
        return ids, people, labels

    def close(self) -> None:
        """Stop the workers now."""
        if self._it is not None:
            self._it._shutdown_workers()  # what the iterator's __del__ would do, but now
            self._it = None
