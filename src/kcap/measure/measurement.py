"""`Measurement`: what a measure of a model on a dataset reports, whatever the dataset's kind.

The knowledge bound (`kcap.measure.knowledge`) and memorised random-string bits
(`kcap.measure.memorization`) both return one, so runs, the results store and reports handle
every kind alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

LOG2E = 1.0 / math.log(2.0)


@dataclass
class Measurement:
    kind: str
    n_people: int
    n_measured: int
    p1: float
    p2: float
    p3: float | None
    bits: dict[str, float]
    bits_unclipped: dict[str, float]
    clipped: list[str]
    bits_per_attribute: dict[str, float]
    loss_per_attribute: dict[str, float]
    recall_accuracy: float
    recall_per_attribute: dict[str, float]
    P: int
    R: float
    R_max: float
    data_bits: float
    eval_seed: int
    params: dict[str, int] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # kind-specific extras
    notes: list[str] = field(default_factory=list)  # what this kind's figures mean, for reports

    def to_dict(self) -> dict:
        return asdict(self)
