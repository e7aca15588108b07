"""Measuring checkpoints trained elsewhere: any local Hugging Face causal LM as a logits module.

The checkpoint must share the dataset's tokenizer ids (e.g. it was exported by `kcap export`, or
trained on the dataset with its ``tokenizer.json``): `check_tokenizer`, which `kcap.measure`
runs first, refuses one whose ``tokenizer.json`` gives any of the dataset's tokens another id, or
whose vocabulary is smaller than the dataset's. Parameters are counted with the SPEC §4 rule:
embedding and untied output rows of tokens the dataset never uses are excluded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kcap.errors import KcapError
from kcap.models.params import ParamCounts


class HFCausalLM(nn.Module):
    """Wraps a transformers causal LM so that ``forward(idx) -> logits`` like our `GPT`."""

    def __init__(self, hf: nn.Module, checkpoint: str | Path | None = None):
        super().__init__()
        self.hf = hf
        self.checkpoint = None if checkpoint is None else Path(checkpoint)  # its local folder

    @property
    def vocab_size(self) -> int:
        return self.hf.get_input_embeddings().weight.shape[0]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=idx).logits.float()


def load_causal_lm(path: str | Path) -> HFCausalLM:
    """Load a local checkpoint directory (never downloads) in fp32, eval mode."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise KcapError("--hf", f"{path} is not a local Hugging Face checkpoint (no config.json)")
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise KcapError("--hf", "needs transformers: pip install 'kcap[hf]'") from None
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar: an error stays one line
    try:
        hf = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return HFCausalLM(hf.eval(), checkpoint=path)


def check_tokenizer(model: HFCausalLM, dataset) -> None:
    """Refuse (``--hf``) a checkpoint that does not use ``dataset``'s token ids: its vocabulary
    is smaller than the dataset tokenizer's, or the ``tokenizer.json`` in its folder maps one of
    the dataset's tokens to another id (extra tokens of its own are allowed)."""
    ours = dataset.tokenizer.hf.get_vocab(with_added_tokens=True)
    if model.vocab_size < len(ours):
        raise KcapError(
            "--hf",
            f"vocabulary {model.vocab_size} is smaller than the dataset tokenizer's {len(ours)}",
        )
    path = None if model.checkpoint is None else model.checkpoint / "tokenizer.json"
    if path is None or not path.is_file():
        return  # no tokenizer saved with the checkpoint: the vocabulary size is all we can check
    from tokenizers import Tokenizer

    try:
        theirs = Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)
    except Exception as e:  # the tokenizers library raises a bare Exception on a bad file
        raise KcapError("--hf", f"{path} is not a readable tokenizer ({e})") from None
    moved = sorted(t for t, i in ours.items() if theirs.get(t) != i)
    if moved:
        raise KcapError(
            "--hf",
            f"{path} does not match the tokenizer of the dataset {dataset.path}: "
            f"{len(moved)} of its {len(ours)} tokens are missing or have other ids "
            f"(e.g. {moved[0]!r}); the model must be trained with the dataset's tokenizer.json",
        )


def count_hf_parameters(model: HFCausalLM, n_used_tokens: int) -> ParamCounts:
    """total / P / non-embedding / active (= P for dense) of a transformers causal LM."""
    params = {id(p): p for p in model.hf.parameters() if p.requires_grad}
    total = sum(p.numel() for p in params.values())
    emb = model.hf.get_input_embeddings().weight
    out = model.hf.get_output_embeddings()
    out_w = None if out is None else out.weight
    tied = out_w is None or out_w is emb or out_w.data_ptr() == emb.data_ptr()
    non_embedding = total - emb.numel() - (0 if tied else out_w.numel())
    d = emb.shape[1]
    P = non_embedding + n_used_tokens * d * (1 if tied else 2)
    return ParamCounts(total=total, P=P, non_embedding=non_embedding, active=P)
