"""Packed training vs the same runs one after another: training tokens/s on the same threads.

K lab runs (GPT2-2-2 at d 32 on the bioD probe, batches of 4 x 128 tokens, different seeds and
learning rates) train S steps each, first one after another (`Trainer.fit`), then as one pack
(`PackedTrainer.fit`), alternately, ``--repeats`` times; the best of each is kept. Both include
everything a run does per step (stream, forward, backward, clipping, AdamW, logging); data
preparation and model construction are outside the clock. ``--device cuda`` runs the same on a
GPU (the GPU check uses `pack_vs_single`).

    python benchmarks/bench_pack.py                 # K = 8, d 32, 1 thread
    python benchmarks/bench_pack.py --k 4 --d 64 --threads 2
    python benchmarks/bench_pack.py --head-share    # the share of a packed step in the head

``--head-share`` also times, in the same process, what no packing can speed up: each model's
vocabulary head and loss (the logits of its 512 tokens over the whole vocabulary, cross-entropy,
and their backward), run for the K models as the pack runs them, against the packed step.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from kcap.training.config import parse_config
from kcap.training.packed import PackedTrainer
from kcap.training.trainer import Trainer, prepare_dataset

PROBE = {"kind": "biod", "seed": 0, "k": 8, "c": 1, "d": 128, "l": 1, "t": 128, "vocab": 1024}


def lab_config(dataset, d: int, seed: int, lr: float, device: str = "cpu") -> dict:
    """A lab run (configs/recipes/shared/lab.yaml) on ``dataset`` (a path, or a spec dict)."""
    return {
        "name": f"bench-{seed}",
        "dataset": dataset if isinstance(dataset, dict) else {"path": str(dataset)},
        "model": {"preset": "gpt2-2-2", "overrides": {"d_model": d}},
        "training": {
            "exposures": 100,
            "batch_size": 4,
            "window": 128,
            "lr": lr,
            "seed": seed,
            "checkpoint_every": 10**9,
            "log_every": 100,
            "device": device,
        },
        "measurement": {"batch_size": 200},
    }


class Bench:
    """K lab runs on one generated bioD probe of ``n`` people, in ``work``."""

    def __init__(self, work: Path, k: int, d: int, n: int, threads: int, device: str = "cpu"):
        self.work, self.threads = work, threads
        prepare_dataset(parse_config(lab_config(PROBE | {"n": n}, d, 0, 3e-3)), work / "data")
        lrs = [3e-3, 2e-3] * k
        self.cfgs = [
            parse_config(lab_config(work / "data" / "dataset", d, s, lrs[s], device))
            for s in range(k)
        ]

    def members(self, tag: str, k: int | None = None) -> list[Trainer]:
        out = []
        for i, cfg in enumerate(self.cfgs[:k]):
            run = self.work / f"{tag}{i}"
            shutil.rmtree(run, ignore_errors=True)
            out.append(Trainer(cfg, run, progress=False, threads=self.threads))
        return out

    def sequential(self, steps: int, k: int | None = None) -> tuple[int, float]:
        """Tokens and seconds of the runs trained one after another."""
        runs = self.members("seq", k)
        _sync()
        t0 = time.perf_counter()
        for tr in runs:
            tr.fit(stop_at=steps)
        _sync()
        return sum(tr.tokens for tr in runs), time.perf_counter() - t0

    def packed(self, steps: int, k: int | None = None) -> tuple[int, float]:
        """Tokens and seconds of the runs trained as one pack."""
        pack = PackedTrainer(self.members("pack", k))
        _sync()
        t0 = time.perf_counter()
        pack.fit(stop_after=steps)
        _sync()
        return sum(m.tokens for m in pack.members), time.perf_counter() - t0


def head_share(bench: Bench, steps: int, k: int) -> tuple[float, float]:
    """Seconds per packed step, and per step of the K heads and losses alone (forward and
    backward, as `PackedGPT.nll` runs them: model by model), best of three."""
    import torch.nn.functional as F

    pack = PackedTrainer(bench.members("share", k))
    pack.fit(stop_after=20)  # warm: allocator, caches
    before = pack.members[0].train_seconds  # the steps' time only, not the checkpoints'
    pack.fit(stop_after=steps)
    step_s = (pack.members[0].train_seconds - before) / steps
    model = pack.model
    head = model._head().detach()
    t = bench.cfgs[0].training
    rows, d = t.batch_size * t.window, head.shape[-1]  # one step's tokens per model
    hs = [torch.randn(rows, d, requires_grad=True) for _ in range(k)]
    heads = [head[i].clone().requires_grad_(True) for i in range(k)]
    ys = [torch.randint(0, head.shape[1], (rows,)) for _ in range(k)]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(steps):
            parts = zip(hs, heads, ys, strict=True)
            losses = [F.cross_entropy(h @ w.T, y, reduction="sum") for h, w, y in parts]
            torch.stack(losses).sum().backward()
        best = min(best, (time.perf_counter() - t0) / steps)
    return step_s, best


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=8, help="models")
    ap.add_argument("--d", type=int, default=32, help="width of each GPT2-2-2")
    ap.add_argument("--steps", type=int, default=300, help="steps per model and repeat")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=800, help="people in the bioD probe")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--head-share", action="store_true", help="time the heads' share of a step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-pack-"))
    try:
        bench = Bench(work, args.k, args.d, args.n, args.threads, args.device)
        if args.head_share:
            step_s, head_s = head_share(bench, args.steps, args.k)
            print(
                f"K = {args.k}, d {args.d}, {args.threads} thread(s): packed step "
                f"{step_s * 1e3:.1f} ms, of which the {args.k} heads and losses "
                f"{head_s * 1e3:.1f} ms ({head_s / step_s:.0%})"
            )
            return
        seq_best = pack_best = float("inf")
        tokens = 0
        for r in range(args.repeats):
            tokens, seq = bench.sequential(args.steps)
            packed_tokens, packed = bench.packed(args.steps)
            assert packed_tokens == tokens  # the same windows, one after another or packed
            seq_best, pack_best = min(seq_best, seq), min(pack_best, packed)
            print(
                f"repeat {r + 1}: sequential {tokens / seq:,.0f} tokens/s, "
                f"packed {tokens / packed:,.0f} tokens/s ({seq / packed:.2f}x)"
            )
        print(
            f"| K = {args.k} GPT2-2-2 d {args.d}, batches of 4 x 128, {args.steps} steps each, "
            f"{args.threads} thread(s) | `python benchmarks/bench_pack.py --k {args.k} --d "
            f"{args.d} --threads {args.threads}` | packed: {tokens / pack_best:,.0f} tokens/s | "
            f"{args.k} runs one after another: {tokens / seq_best:,.0f} tokens/s | "
            f"{seq_best / pack_best:.2f}x |"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
