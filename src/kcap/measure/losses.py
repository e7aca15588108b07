"""Per-token losses of documents and the off-by-one rule, in one place.

A document is scored as ``<|eos|> d_1 ... d_n``: the logits at position t predict token t+1, so
token i of the document is scored by the logits after ``<|eos|> d_1 .. d_{i-1}``. The same pass
gives whether greedy decoding would reproduce each token (argmax == token), which makes exact-
match recall of any span a by-product: greedy generation reproduces a span exactly iff every one
of its tokens is the argmax given the correct tokens before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def token_losses(
    model: torch.nn.Module,
    docs: Sequence[Sequence[int]],
    eos_id: int,
    device: torch.device,
    *,
    probes: Sequence[tuple | None] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray | None]]:
    """For each document: natural-log loss of every token, whether it is the argmax, and, where
    ``probes[i] = (position, candidate_ids, ...)``, the log-probabilities of those candidates as the
    token at that position (None elsewhere)."""
    lengths = [len(d) for d in docs]
    width = max(lengths) + 1
    batch = torch.full((len(docs), width), eos_id, dtype=torch.long)
    for i, d in enumerate(docs):
        batch[i, 1 : 1 + len(d)] = torch.as_tensor(d, dtype=torch.long)
    batch = batch.to(device)
    logits = model(batch[:, :-1]).float()
    targets = batch[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    hit = logits.argmax(-1) == targets
    picked: list[np.ndarray | None] = [None] * len(docs)
    for i, probe in enumerate(probes or ()):
        if probe is not None:
            position, candidates = probe[0], probe[1]
            logp = torch.log_softmax(logits[i, position], -1)
            picked[i] = logp[torch.as_tensor(list(candidates), device=logp.device)].cpu().numpy()
    nll, hit = nll.cpu().numpy(), hit.cpu().numpy()
    return (
        [nll[i, :n] for i, n in enumerate(lengths)],
        [hit[i, :n] for i, n in enumerate(lengths)],
        picked,
    )
