"""Tokens/s of the training stream with its blocks rendered in 0 (in-process), 1 and 2 worker
processes (`kcap.tokenization.loader`), side by side in one run: bioS, 512-token windows.

    python benchmarks/bench_loader.py --n 20000 --windows 4000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def rate(dataset, workers: int, windows: int) -> float:
    """Tokens/s of taking ``windows`` windows, once the workers (if any) are up."""
    from kcap.tokenization.factory import make_stream

    stream = make_stream(dataset, exposures=1000, seed=0, window=512)
    stream.render_in_workers(workers)
    for _ in range(64):  # warm-up: the pre-tokenised pieces, the workers' first blocks
        next(stream)
    t0 = time.perf_counter()
    for _ in range(windows):
        next(stream)
    dt = time.perf_counter() - t0
    stream.render_in_workers(0)
    return windows * 512 / dt


def main() -> None:
    import torch

    from kcap.data.bios import build_bios
    from kcap.data.build import write_dataset
    from kcap.data.dataset import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--windows", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bios"
        write_dataset(out, *build_bios(args.n, seed=0, vocab=1024), force=False)
        dataset = load_dataset(out)
        best = {w: 0.0 for w in (0, 1, 2)}
        for _ in range(args.repeat):
            for workers in best:
                best[workers] = max(best[workers], rate(dataset, workers, args.windows))
    for workers, tps in best.items():
        print(f"{workers} workers: {tps:,.0f} tokens/s ({tps / best[0]:.2f}x in-process)")


if __name__ == "__main__":
    main()
