"""The training loss: summed next-token cross-entropy, with a float32 CPU fast path (issue 13).

`summed_nll(logits, targets, ignore_index)` is ``F.cross_entropy(logits, targets,
ignore_index=ignore_index, reduction="sum")``. For float32 logits on a CPU (outside autocast and
torch.compile, `kcap.models.gpt.FAST_PATHS["loss"]`) it takes `_SummedNLL`, which computes the
loss and its gradient, softmax minus the one-hot target, in one forward pass over the logits and
keeps only that gradient for the backward, which scales it in place. torch's composite path
writes the log-softmax, then in the backward a zero-filled gradient of the same size, a scatter
and a log-softmax backward. At a lab model's 512 x 1,152 logits the head and loss run 1.33x
faster (forward + backward, one thread; `benchmarks/bench_loss.py`, results/benchmarks.md),
and a third of a d-32 step is its head and loss; the gain grows with the vocabulary and is nil,
never negative, at 300 rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kcap.models.gpt import _fast

__all__ = ["summed_nll"]


def summed_nll(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The summed cross-entropy (a 0-dim tensor) of ``logits`` (N, V) against ``targets`` (N,),
    skipping the targets equal to ``ignore_index``."""
    if logits.device.type == "cpu" and logits.dim() == 2 and _fast("loss", logits):
        return _SummedNLL.apply(logits, targets, ignore_index)
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")


class _SummedNLL(torch.autograd.Function):
    """Summed cross-entropy whose gradient is made in the forward pass. Its backward scales
    that saved gradient in place, so the graph cannot be back-propagated twice (it says so)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int):
        valid = targets != ignore_index
        safe = torch.where(valid, targets, 0).unsqueeze(1)  # any index for an ignored row
        top = logits.amax(1, keepdim=True)
        grad = torch.sub(logits, top).exp_()
        total = grad.sum(1, keepdim=True)
        rows = top.add_(total.log()).sub_(logits.gather(1, safe))  # -log p(target), (N, 1)
        loss = torch.where(valid.unsqueeze(1), rows, 0.0).sum()
        keep = valid.unsqueeze(1).to(grad.dtype)
        grad.mul_(keep / total)  # softmax on the counted rows, zero on the ignored ones
        grad.scatter_add_(1, safe, keep.neg())  # minus the one-hot target
        ctx.save_for_backward(grad)
        ctx.spent = False
        return loss

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        if ctx.spent:
            raise RuntimeError("summed_nll's graph cannot be back-propagated twice")
        ctx.spent = True
        (grad,) = ctx.saved_tensors
        return grad.mul_(g), None, None
