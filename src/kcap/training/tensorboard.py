"""TensorBoard scalars of a kcap training run: ``training.log: [jsonl, tensorboard]``.

``RUN_DIR/metrics.jsonl`` stays the run's record (``kcap report`` reads it alone); this writer
mirrors each of its records into ``RUN_DIR/tensorboard`` at the record's step: a training record
as ``train/loss``, ``train/lr``, ``train/tokens``, ``train/tokens_per_s``, ``train/mfu`` (where
known, `kcap.training.mfu`) and ``train/moe/...``; a measurement (in training or final) as
``measure/bits``, ``measure/R``, ``measure/R_max``, ``measure/recall_accuracy``, ``measure/p1``,
``measure/p2`` and ``measure/n_measured``. The ``tensorboard`` package is the optional extra
``kcap[tensorboard]``; without it the run fails before writing anything, naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kcap.errors import KcapError

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLog:
    """Writes trainer log records as scalars. The event file is opened at the first record and
    flushed after each, as the JSONL file is appended: a run stopped at any point keeps all."""

    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise KcapError(
                "training.log",
                "tensorboard needs the tensorboard package: pip install 'kcap[tensorboard]'",
            ) from None
        self.log_dir = Path(log_dir)
        self._writer_class = SummaryWriter
        self._writer = None

    def write(self, record: dict) -> None:
        """Add the record's scalars at its ``step``."""
        if self._writer is None:
            self._writer = self._writer_class(str(self.log_dir))
        for tag, value in scalars(record):
            self._writer.add_scalar(tag, value, record["step"])
        self._writer.flush()

    def close(self) -> None:
        """Close the event file (a later record opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def scalars(record: dict) -> Iterator[tuple[str, float]]:
    """(tag, value) pairs of a trainer record: a measurement's figures under ``measure/``,
    everything else numeric under ``train/`` (the step is the x axis, not a scalar)."""
    group, values = ("measure", record["measure"]) if "measure" in record else ("train", record)
    for key, value in values.items():
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
            yield f"{group}/{key}", float(value)
