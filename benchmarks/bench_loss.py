"""The training loss on a CPU: `kcap.models.loss.summed_nll` against `F.cross_entropy`.

Times the vocabulary head and the summed cross-entropy, forward and backward, on the logits of
one lab step (R rows of the batch, d wide, over V vocabulary rows), both ways taking turns in
one process, ``--repeats`` times; the best of each and their ratio are printed. The head is the
trainer's (`_NarrowHead` at d <= 64) in both, so the difference is the loss alone.

    python benchmarks/bench_loss.py                       # 512 x 1,152 logits, d 32, 1 thread
    python benchmarks/bench_loss.py --d 64 --vocab 300
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from kcap.models import gpt
from kcap.models.loss import summed_nll


def step_ms(fast: bool, h, w, y, steps: int) -> float:
    """Milliseconds per head + loss forward and backward."""
    gpt.FAST_PATHS["loss"] = fast
    try:
        t0 = time.perf_counter()
        for _ in range(steps):
            logits = gpt.head_product(h, w)
            if fast:
                loss = summed_nll(logits, y, -1)
            else:
                loss = F.cross_entropy(logits, y, reduction="sum")
            loss.backward()
        return (time.perf_counter() - t0) / steps * 1e3
    finally:
        gpt.FAST_PATHS["loss"] = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512, help="tokens of one step (4 x 128)")
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=1152, help="vocabulary rows of the head")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(args.rows, args.d, generator=gen, requires_grad=True)
    w = (0.1 * torch.randn(args.vocab, args.d, generator=gen)).requires_grad_()
    y = torch.randint(0, args.vocab, (args.rows,), generator=gen)
    for fast in (False, True):  # warm: allocator, caches
        step_ms(fast, h, w, y, 20)
    best = {False: float("inf"), True: float("inf")}
    for i in range(args.repeats):
        row = {fast: step_ms(fast, h, w, y, args.steps) for fast in (False, True)}
        best = {k: min(best[k], v) for k, v in row.items()}
        print(f"repeat {i + 1}: F.cross_entropy {row[False]:.2f} ms, summed_nll {row[True]:.2f} ms")
    shape = f"{args.rows} x {args.vocab} logits, d {args.d}, {args.threads} thread(s)"
    print(
        f"| {shape} | F.cross_entropy {best[False]:.2f} ms | summed_nll {best[True]:.2f} ms "
        f"| {best[False] / best[True]:.2f}x |"
    )


if __name__ == "__main__":
    main()
