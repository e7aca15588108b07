"""kcap's public Python API, re-exported by `kcap`: datasets, their tokenizer, the training
stream, and the measure of the bits a model stores.

    data = kcap.make_dataset("bios", "data/bios1k", n=1000)   # or kcap.load_dataset(path)
    data.bits["total"]                                         # its exact bits (SPEC §2)
    tok = kcap.hf_tokenizer(data)                              # a transformers tokenizer
    stream = kcap.training_stream(data, exposures=100, window=128)   # a torch IterableDataset
    m = kcap.measure(model, data)                              # a kcap GPT, transformers model,
                                                               # or ids -> logits function

The functions import torch and transformers when called, so ``import kcap`` stays cheap. Errors a
caller can fix raise `kcap.KcapError` (a ``ValueError``) naming the offending argument.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kcap.errors import KcapError, require

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast

    from kcap.data.dataset import Dataset
    from kcap.integrations.pytorch import KnowledgeStream
    from kcap.measure.measurement import Measurement
    from kcap.models.params import ParamCounts


def load_dataset(path: str | Path) -> Dataset:
    """Load a dataset directory written by `make_dataset` or ``kcap data``.

    The `Dataset` holds the manifest (``.kind``, ``.manifest["params"]``, ``.bits``: the exact bit
    content by component, ``"total"`` included), the sampled people and the trained tokenizer."""
    from kcap.data.dataset import load_dataset as load

    return load(path)


def make_dataset(kind: str, out: str | Path, *, force: bool = False, **params: Any) -> Dataset:
    """Generate a dataset into directory ``out`` and load it.

    ``kind`` is one of bios, biod, junk, random, bior; ``params`` are the fields of a run
    config's ``dataset`` section (SPEC §2, ``kcap data --help``): ``n``, ``seed``, ``variant``,
    ``vocab``, ``tokenizer``; bioD ``k, c, d, l, t``; junk ``ratio, junk, domain, useful``;
    random ``m, s, v``; bioR ``rewriter, rewrites``. A non-empty ``out`` is refused unless
    ``force``; the directory is written atomically."""
    from kcap.data.build import write_dataset
    from kcap.training.config import parse_config
    from kcap.training.trainer import build_dataset

    require("path" not in params, "path", "make_dataset writes a dataset; use load_dataset(path)")
    spec = parse_config({"dataset": {"kind": kind, **params}}).dataset
    out = Path(out)
    empty = not out.is_dir() or not any(out.iterdir())
    require(force or empty, "out", f"{out} is not empty (pass force=True to replace it)")
    write_dataset(out, *build_dataset(spec), force=True)
    return load_dataset(out)


def hf_tokenizer(dataset: Dataset) -> PreTrainedTokenizerFast:
    """The dataset's tokenizer as a transformers `PreTrainedTokenizerFast` (a copy), with
    ``<|eos|>`` as its eos and pad token: ids are the ids kcap's stream and measure use."""
    from transformers import PreTrainedTokenizerFast

    from kcap.tokenization.tokenizer import EOS

    return PreTrainedTokenizerFast(
        tokenizer_object=dataset.tokenizer.hf, eos_token=EOS, pad_token=EOS
    )


def training_stream(
    dataset: Dataset,
    *,
    exposures: int,
    seed: int = 0,
    window: int = 512,
    batch_size: int = 1,
    start_step: int = 0,
) -> KnowledgeStream:
    """The exposure-exact training stream as a `torch.utils.data.IterableDataset`.

    Every person exactly ``exposures`` times, in an order keyed by ``seed``, as windows of
    ``window + 1`` tokens (dicts of ``input_ids`` and ``labels``; see
    `kcap.integrations.pytorch`). Pass the DataLoader's ``batch_size``: then any number of
    DataLoader workers yields the batches of one process, in the same order, each window once;
    ``start_step`` resumes after that many batches."""
    from kcap.integrations.pytorch import KnowledgeStream

    return KnowledgeStream(
        dataset,
        exposures=exposures,
        seed=seed,
        window=window,
        batch_size=batch_size,
        start_step=start_step,
    )


def parameter_counts(model: torch.nn.Module, dataset: Dataset) -> ParamCounts:
    """SPEC §4 parameter counts of a kcap `GPT` or a transformers causal LM on ``dataset``:
    ``P`` leaves out the embedding and output rows of tokens the dataset never uses."""
    from kcap.models import GPT, count_parameters

    used = dataset.manifest["vocab"]["used_tokens"]
    if isinstance(model, GPT):
        return count_parameters(model, used)
    if _is_transformers_model(model):
        from kcap.models.external import HFCausalLM, count_hf_parameters

        return count_hf_parameters(HFCausalLM(model), used)
    raise KcapError(
        "P",
        f"kcap counts the parameters of a kcap GPT or a transformers model, not of a "
        f"{type(model).__name__}: pass P (the parameters the model stores knowledge in)",
    )


def measure(
    model: Any,
    dataset: Dataset,
    *,
    P: int | None = None,
    max_people: int | None = None,
    eval_seed: int | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> Measurement:
    """Measure the bits of ``dataset``'s knowledge ``model`` stores: the `Measurement` that
    ``kcap measure`` prints (bits by term, P, R = bits / P, R_max, p1/p2, recall accuracy).

    ``model`` is a kcap `GPT`, a transformers causal LM, or any callable from token ids [B, T] to
    logits [B, T, V] (or to an output with ``.logits``) over the dataset's tokenizer. ``P``
    defaults to the SPEC §4 count (`parameter_counts`) for a GPT or transformers model and must
    be given otherwise. ``eval_seed`` defaults to the CLI's (12345); ``max_people`` measures a
    random subset; ``device`` defaults to the model's. The model is left in the mode it was in."""
    import torch

    from kcap.integrations.pytorch import LogitsModule
    from kcap.measure import measure as measure_any

    params = {"P": P} if P is not None else asdict(parameter_counts(model, dataset))
    require(params["P"] >= 1, "P", f"must be a positive integer; got {params['P']}")
    if device is None:
        first = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        device = "cpu" if first is None else first.device
    return measure_any(
        LogitsModule(model, dataset.tokenizer.vocab_size),
        dataset,
        P_count=params["P"],
        params=params,
        eval_seed=eval_seed,
        max_people=max_people,
        batch_size=batch_size,
        device=device,
    )


def _is_transformers_model(model: object) -> bool:
    """Whether ``model`` is a transformers `PreTrainedModel` (never imports transformers)."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)
