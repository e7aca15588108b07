"""Throughput of the training stream: bioS biographies generated and tokenized per second.

Runs the same path training uses (render a labelled document, encode it piece by piece through
the cache, append to the window buffer) on one core, and compares with the straightforward
baseline of encoding each document's full text with the Hugging Face tokenizer.

    python benchmarks/bench_stream.py --n 20000 --docs 100000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="people in the population")
    ap.add_argument("--docs", type=int, default=100000, help="documents to stream")
    ap.add_argument("--vocab", type=int, default=2048)
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(1)

    from kcap.data.bios import BioSPopulation, BioSSource, build_bios
    from kcap.tokenization.stream import ExposureStream

    manifest, pop, tok = build_bios(args.n, seed=0, vocab=args.vocab)
    source = BioSSource(pop, "online", seed=0)
    exposures = -(-args.docs // args.n)
    stream = ExposureStream(source, tok, exposures=exposures, seed=0, window=512)
    next(stream)  # warm the exposure-0 layouts
    t0 = time.perf_counter()
    windows = 0
    while stream.counts.sum() < args.docs:
        next(stream)
        windows += 1
    dt = time.perf_counter() - t0
    docs = int(stream.counts.sum())
    print(
        f"kcap stream (render + cached piece tokenization + windows): "
        f"{docs / dt:,.0f} docs/s, {windows * 512 / dt:,.0f} tokens/s"
    )

    people = np.arange(min(args.n, 20000))
    texts = [d.text for d in source.documents(1, people)]
    t0 = time.perf_counter()
    for text in texts:
        tok.hf.encode(text, add_special_tokens=False)
    base = len(texts) / (time.perf_counter() - t0)
    print(
        f"baseline (HF tokenizer encode of each full text, rendering excluded): {base:,.0f} docs/s"
    )
    print(f"ratio kcap / baseline: {docs / dt / base:.2f}x")
    del manifest, BioSPopulation


if __name__ == "__main__":
    main()
