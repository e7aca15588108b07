"""A Hugging Face `Trainer` callback that measures the bits the model stores as it trains.

    args = TrainingArguments(..., num_train_epochs=1)  # one pass over the stream is the run
    trainer = Trainer(model=model, args=args, train_dataset=kcap.training_stream(data, ...))
    knowledge = KnowledgeCallback(data, every=500).attach(trainer)
    trainer.train()
    knowledge.history            # [(step, Measurement), ...]

Every ``every`` optimizer steps the callback runs `kcap.measure` on the Trainer's model and logs
``kcap/bits``, ``kcap/R`` and ``kcap/recall`` with ``trainer.log``: they land in
``trainer.state.log_history`` and reach every logger the Trainer reports to (TensorBoard, W&B,
the console), at the step they were measured. `attach` binds the callback to its Trainer (a
callback is otherwise never told which Trainer runs it, and ``trainer.log`` is how a figure
reaches the Trainer's loggers). Only the main process measures.
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from kcap.api import measure
from kcap.data.dataset import Dataset
from kcap.errors import require
from kcap.measure.measurement import Measurement

PREFIX = "kcap/"


def figures(m: Measurement, prefix: str = PREFIX) -> dict[str, float]:
    """The logged figures of a measurement: total bits stored, R and recall accuracy."""
    return {
        f"{prefix}bits": m.bits["total"],
        f"{prefix}R": m.R,
        f"{prefix}recall": m.recall_accuracy,
    }


class KnowledgeCallback(TrainerCallback):
    """Measures ``dataset``'s bits in the Trainer's model every ``every`` steps and logs them.

    ``P``, ``max_people``, ``eval_seed`` and ``batch_size`` are `kcap.measure`'s (P defaults to
    the SPEC §4 count of a transformers model). Each measurement is kept in ``history``."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        every: int,
        P: int | None = None,
        max_people: int | None = None,
        eval_seed: int | None = None,
        batch_size: int = 64,
    ):
        require(every >= 1, "every", f"must be a positive integer; got {every}")
        self.dataset = dataset
        self.every = every
        self.options = {
            "P": P,
            "max_people": max_people,
            "eval_seed": eval_seed,
            "batch_size": batch_size,
        }
        self.history: list[tuple[int, Measurement]] = []
        self.trainer: Trainer | None = None

    def attach(self, trainer: Trainer) -> KnowledgeCallback:
        """Add this callback to ``trainer`` and log through it; returns the callback."""
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        require(
            self.trainer is not None,
            "KnowledgeCallback",
            "add it with callback.attach(trainer), so that it logs through the Trainer",
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step % self.every or not state.is_world_process_zero:
            return
        m = measure(self.trainer.model, self.dataset, **self.options)
        self.history.append((state.global_step, m))
        self.trainer.log(figures(m))
