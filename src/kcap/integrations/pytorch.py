"""The exposure-exact training stream as a `torch.utils.data.IterableDataset`.

`KnowledgeStream` wraps the stream kcap's own trainer reads (`kcap.tokenization.factory.
make_stream`): every person exactly E times, in the order keyed by the seed, cut into windows of
``window + 1`` tokens. Each item is one window as a dict a Hugging Face causal LM takes as it is:

- ``input_ids``: the ``window + 1`` token ids (the padding of the last window becomes ``<|eos|>``);
- ``labels``: the same ids with padding as ``-100``; the model shifts them, so token t + 1 is
  predicted from tokens 0..t and every token after the stream's first is predicted exactly once.

A plain loop over a kcap `GPT` (or any ``ids[B, T] -> logits[B, T, V]`` model) uses
``input_ids[:, :-1]`` as inputs and ``labels[:, 1:]`` as targets (``ignore_index=-100``). Random
strings come one sequence per window (S + 1 tokens, whatever ``window``), as kcap trains them.

Worker-safe: with ``DataLoader(num_workers=k)`` every worker renders the stream and keeps every
k-th block of ``batch_size`` windows, so each window is produced exactly once; when ``batch_size``
is the DataLoader's, the batches and their order are those of a single process. Resumable:
``start_step`` skips the first ``start_step × batch_size`` windows (they are rendered, not
returned), so a resumed loop sees the windows an uninterrupted one would.

`LogitsModule` adapts any causal LM to the ``ids -> logits`` module `kcap.measure` reads.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from kcap.data.dataset import Dataset
from kcap.errors import require
from kcap.tokenization.factory import make_stream
from kcap.tokenization.stream import PAD

#: The label Hugging Face losses (and `torch.nn.functional.cross_entropy`'s default) ignore.
IGNORE = -100


class KnowledgeStream(IterableDataset):
    """E exposures of every person of ``dataset``, as windows of ``window + 1`` tokens.

    One pass over it is the whole run; iterating again starts the run over (so a Hugging Face
    `Trainer` takes it with ``num_train_epochs=1``, or ``max_steps``)."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        exposures: int,
        seed: int = 0,
        window: int = 512,
        batch_size: int = 1,
        start_step: int = 0,
    ):
        require(exposures >= 1, "exposures", f"must be a positive integer; got {exposures}")
        require(window >= 8, "window", f"must be at least 8; got {window}")
        require(batch_size >= 1, "batch_size", f"must be a positive integer; got {batch_size}")
        require(start_step >= 0, "start_step", f"must be at least 0; got {start_step}")
        self.dataset = dataset
        self.exposures = exposures
        self.seed = seed
        self.window = window
        self.batch_size = batch_size
        self.start = start_step * batch_size
        self._windows: int | None = None

    def stream(self):
        """A fresh kcap stream of this run (`ExposureStream`, `MixtureStream` or
        `SequenceStream`), with its realised exposure ``counts``."""
        return make_stream(
            self.dataset, exposures=self.exposures, seed=self.seed, window=self.window
        )

    def __len__(self) -> int:
        """Windows this stream yields (all workers together), from ``start_step`` on."""
        if self._windows is None:
            self._windows = self.stream().count_windows()
        return max(0, self._windows - self.start)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        eos = self.dataset.tokenizer.eos_id
        for index, window in enumerate(self.stream()):
            if index < self.start or ((index - self.start) // self.batch_size) % workers != worker:
                continue
            ids = torch.from_numpy(window.ids)
            pad = ids == PAD
            yield {"input_ids": ids.masked_fill(pad, eos), "labels": ids.masked_fill(pad, IGNORE)}


class LogitsModule(torch.nn.Module):
    """Any causal LM as the ``forward(ids[B, T]) -> logits[B, T, V]`` module the measure reads:
    a kcap `GPT`, a transformers model (its output's ``.logits``) or a plain function. A wrapped
    module is a submodule, so ``eval()`` / ``train()`` reach it; the adapter starts in its mode."""

    def __init__(self, model, vocab_size: int):
        super().__init__()
        self.model = model  # an nn.Module is registered as a submodule; a function is kept as is
        self.vocab_size = vocab_size
        self.train(bool(getattr(model, "training", False)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(ids)
        logits = out.logits if hasattr(out, "logits") else out
        is_logits = isinstance(logits, torch.Tensor) and logits.dim() == 3
        require(
            is_logits and logits.shape[:2] == ids.shape,
            "model",
            f"must map token ids {tuple(ids.shape)} to logits [B, T, V]; got {_shape(logits)}",
        )
        require(
            logits.shape[-1] >= self.vocab_size,
            "model",
            f"its {logits.shape[-1]} logits do not cover the dataset's {self.vocab_size} tokens",
        )
        return logits.float()


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
