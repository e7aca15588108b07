"""One configurable decoder (the SPEC §5 switchboard) and its parameter accounting."""

from kcap.models.config import ModelConfig, preset
from kcap.models.gpt import GPT
from kcap.models.params import ParamCounts, count_parameters, count_parameters_from_config

__all__ = [
    "GPT",
    "ModelConfig",
    "ParamCounts",
    "count_parameters",
    "count_parameters_from_config",
    "preset",
]
