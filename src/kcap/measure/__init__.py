"""The knowledge measure: span losses, the bit lower bound, capacity ratio, recall accuracy.

`measure` is the one entry point: it picks, by the dataset's measure kind, the bioS/bioD bound
(`kcap.measure.knowledge`) or memorised random-string bits (`kcap.measure.memorization`); both
return a `kcap.measure.measurement.Measurement`. (Its modules are imported on first use, so
``import kcap`` stays cheap.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from kcap.data.dataset import Dataset
    from kcap.measure.measurement import Measurement


def measure(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    P_count: int,
    params: dict[str, int] | None = None,
    eval_seed: int | None = None,
    max_people: int | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> Measurement:
    """Measure what ``model`` holds of ``dataset``: its bit bound (bioS, bioD, bioR, junk) or its
    memorised bits (random strings; ``max_people`` then counts sequences). ``eval_seed``
    defaults to the dataset's evaluation seed (`kcap.data.dataset.DEFAULT_EVAL_SEED`)."""
    from kcap.data.dataset import DEFAULT_EVAL_SEED
    from kcap.errors import require
    from kcap.models.external import HFCausalLM, check_tokenizer

    require(max_people is None or max_people >= 1, "max_people", f"must be >= 1; got {max_people}")
    require(batch_size >= 1, "batch_size", f"must be >= 1; got {batch_size}")
    if isinstance(model, HFCausalLM):  # a checkpoint made elsewhere: same token ids, or refuse
        check_tokenizer(model, dataset)
    common = dict(
        P_count=P_count,
        params=params,
        eval_seed=DEFAULT_EVAL_SEED if eval_seed is None else eval_seed,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    if dataset.measure_kind == "random":
        from kcap.measure.memorization import measure_memorization

        return measure_memorization(model, dataset, max_sequences=max_people, **common)
    from kcap.measure.knowledge import measure_knowledge

    return measure_knowledge(model, dataset, max_people=max_people, **common)
