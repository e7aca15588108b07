"""kcap: measure the bits of knowledge a language model stores per parameter.

The public API (`kcap.api`; every name in ``__all__`` is stable and versioned with the package):

- datasets: `make_dataset`, `load_dataset`, `Dataset` (``.bits``: its exact bit content);
- for any training loop: `hf_tokenizer` (a transformers tokenizer), `training_stream` (the
  exposure-exact stream as a torch `KnowledgeStream`);
- the instrument: `measure` (any causal LM -> `Measurement`), `parameter_counts` (`ParamCounts`);
- `KcapError`: a fixable input error, naming the argument.

A Hugging Face `Trainer` callback is `kcap.integrations.transformers.KnowledgeCallback`.
``import kcap`` imports neither torch nor transformers; the functions import them when called.

``kcap.measure`` is the function. The subpackage of the same name (whose own ``measure`` is the
lower-level entry point the CLI uses) is loaded first, below, so that
``from kcap.measure.knowledge import ...`` keeps working and never rebinds the name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

importlib.import_module("kcap.measure")  # the subpackage: `measure` below then names the function

from kcap.api import (  # noqa: E402
    hf_tokenizer,
    load_dataset,
    make_dataset,
    measure,
    parameter_counts,
    training_stream,
)
from kcap.errors import KcapError  # noqa: E402

if TYPE_CHECKING:
    from kcap.data.dataset import Dataset
    from kcap.integrations.pytorch import KnowledgeStream
    from kcap.measure.measurement import Measurement
    from kcap.models.params import ParamCounts

__version__ = "0.1.0"

#: Classes of the API, imported on first use (they pull in numpy, tokenizers or torch).
_LAZY = {
    "Dataset": "kcap.data.dataset",
    "KnowledgeStream": "kcap.integrations.pytorch",
    "Measurement": "kcap.measure.measurement",
    "ParamCounts": "kcap.models.params",
}

__all__ = [
    "Dataset",
    "KcapError",
    "KnowledgeStream",
    "Measurement",
    "ParamCounts",
    "__version__",
    "hf_tokenizer",
    "load_dataset",
    "make_dataset",
    "measure",
    "parameter_counts",
    "training_stream",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kcap' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
