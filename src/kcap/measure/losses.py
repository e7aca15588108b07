"""Per-token losses of documents and the off-by-one rule, in one place.

A document is scored as ``<|eos|> d_1 ... d_n``: the logits at position t predict token t+1, so
token i of the document is scored by the logits after ``<|eos|> d_1 .. d_{i-1}``. The same pass
gives whether greedy decoding would reproduce each token (argmax == token), which makes exact-
match recall of any span a by-product: greedy generation reproduces a span exactly iff every one
of its tokens is the argmax given the correct tokens before it.

A query ``(i, candidate_ids)`` also reads the log-probabilities of chosen tokens as token i of
the document; i may be the document's length (the token after its end). The batch is padded on
the right with ``<|eos|>``: with causal attention, padding never changes an earlier position.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: (document token index, candidate token ids): read the candidates' log-probabilities there.
Query = tuple[int, Sequence[int]]


@torch.no_grad()
def token_losses(
    model: torch.nn.Module,
    docs: Sequence[Sequence[int]],
    eos_id: int,
    device: torch.device,
    *,
    queries: Sequence[Sequence[Query]] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[list[np.ndarray]]]:
    """For each document: natural-log loss of every token, whether it is the argmax, and for each
    of its ``queries`` the log-probabilities of the candidate tokens at that position."""
    lengths = [len(d) for d in docs]
    width = max(lengths) + 2  # one extra position: queries may read the token after the end
    batch = torch.full((len(docs), width), eos_id, dtype=torch.long)
    for i, d in enumerate(docs):
        batch[i, 1 : 1 + len(d)] = torch.as_tensor(d, dtype=torch.long)
    batch = batch.to(device)
    logits = model(batch[:, :-1]).float()
    targets = batch[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    hit = logits.argmax(-1) == targets
    picked: list[list[np.ndarray]] = [[] for _ in docs]
    for i, asked in enumerate(queries or ()):
        for position, candidates in asked:
            logp = torch.log_softmax(logits[i, position], -1)
            ids = torch.as_tensor(list(candidates), dtype=torch.long, device=logp.device)
            picked[i].append(logp[ids].cpu().numpy())
    nll, hit = nll.cpu().numpy(), hit.cpu().numpy()
    return (
        [nll[i, :n] for i, n in enumerate(lengths)],
        [hit[i, :n] for i, n in enumerate(lengths)],
        picked,
    )
