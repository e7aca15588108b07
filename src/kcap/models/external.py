"""Measuring checkpoints trained elsewhere: any local Hugging Face causal LM as a logits module.

The checkpoint must share the dataset's tokenizer ids (e.g. it was exported by `kcap export`, or
trained on the dataset with its ``tokenizer.json``). Parameters are counted with the SPEC §4
rule: embedding and untied output rows of tokens the dataset never uses are excluded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kcap.errors import KcapError
from kcap.models.params import ParamCounts


class HFCausalLM(nn.Module):
    """Wraps a transformers causal LM so that ``forward(idx) -> logits`` like our `GPT`."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf

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
    hf = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return HFCausalLM(hf.eval())


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
