"""MoE layer forward+backward throughput: the vectorised `MoEMLP` against the loop-over-experts
reference (`moe_loop_reference`) on the same shapes and weights.

    python benchmarks/bench_moe.py                      # d=128, E=32, k=1, 8x128 tokens, CPU
    python benchmarks/bench_moe.py --device cuda --batch 32 --seq 512 --d 768
"""

from __future__ import annotations

import argparse
import time

import torch

from kcap.models import ModelConfig
from kcap.models.moe import MoEMLP, moe_loop_reference


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tokens_per_second(step, n_tokens: int, warmup: int, iters: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return n_tokens * iters / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=128, help="model width")
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=1, choices=(1, 2))
    ap.add_argument("--capacity-factor", type=float, default=2.0, help="<= 0: no limit")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = ModelConfig(
        n_layer=1,
        n_head=max(1, args.d // 64),
        d_model=args.d,
        vocab_size=2,
        n_experts=args.experts,
        top_k=args.top_k,
        capacity_factor_train=args.capacity_factor,
    )
    torch.manual_seed(0)
    layer = MoEMLP(cfg).to(device).train()
    x = torch.randn(args.batch, args.seq, args.d, device=device, requires_grad=True)
    n_tokens = args.batch * args.seq

    def vectorised() -> None:
        layer.zero_grad(set_to_none=True)
        layer(x).square().mean().backward()

    def reference() -> None:
        layer.zero_grad(set_to_none=True)
        moe_loop_reference(layer, x, args.capacity_factor).square().mean().backward()

    with torch.no_grad():  # same function, so the comparison is fair
        torch.testing.assert_close(
            layer(x), moe_loop_reference(layer, x, args.capacity_factor), atol=1e-5, rtol=1e-4
        )
    fast = tokens_per_second(vectorised, n_tokens, args.warmup, args.iters, device)
    slow = tokens_per_second(reference, n_tokens, args.warmup, args.iters, device)
    print(
        f"MoE fwd+bwd  d={args.d} E={args.experts} k={args.top_k} "
        f"cf={args.capacity_factor} tokens={args.batch}x{args.seq} device={device} "
        f"threads={args.threads}"
    )
    print(f"vectorised      {fast:12,.0f} tokens/s")
    print(f"loop reference  {slow:12,.0f} tokens/s")
    print(f"ratio           {fast / slow:12.2f}x")


if __name__ == "__main__":
    main()
