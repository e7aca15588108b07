"""Throughput of the training stream: bioS biographies generated and tokenized per second.

Runs the two paths training can take, side by side on one core: the vectorised one (the default:
piece rows gathered from pre-tokenised pieces, `kcap.tokenization.gather`) and the per-document
one (render a labelled document, encode it piece by piece through the cache), both appending to
the window buffer and cutting windows; each path ``--repeat`` times, alternately, best run kept.
It also compares with the straightforward baseline of encoding each document's full text with the
Hugging Face tokenizer (rendering excluded).

    python benchmarks/bench_stream.py --n 20000 --docs 100000
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def stream_rate(source, tok, docs: int, n: int, *, vectorised: bool) -> tuple[float, float]:
    """(biographies/s, tokens/s) of streaming ``docs`` documents in 512-token windows."""
    from kcap.tokenization.stream import ExposureStream

    exposures = -(-docs // n) + 1  # room for the windows past ``docs`` before a check
    stream = ExposureStream(
        source, tok, exposures=exposures, seed=0, window=512, vectorised=vectorised
    )
    next(stream)  # warm: the exposure-0 layouts, the pre-tokenised pieces
    start = int(stream.counts.sum())
    t0 = time.perf_counter()
    windows = 0
    while windows % 64 or stream.counts.sum() < docs:  # (summing the counts is not free)
        next(stream)
        windows += 1
    dt = time.perf_counter() - t0
    return (int(stream.counts.sum()) - start) / dt, windows * 512 / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="people in the population")
    ap.add_argument("--docs", type=int, default=100000, help="documents to stream")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each path (best kept)")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    torch.set_num_threads(1)

    from kcap.data.bios import BioSSource, build_bios

    _, pop, tok = build_bios(args.n, seed=0, vocab=args.vocab)
    source = BioSSource(pop, "online", seed=0)
    best = {True: (0.0, 0.0), False: (0.0, 0.0)}
    for _ in range(args.repeat):
        for vectorised in (False, True):
            rate = stream_rate(source, tok, args.docs, args.n, vectorised=vectorised)
            best[vectorised] = max(best[vectorised], rate)
    for vectorised, name in ((False, "per-document"), (True, "vectorised")):
        docs, tokens = best[vectorised]
        print(f"kcap stream, {name} path: {docs:,.0f} docs/s, {tokens:,.0f} tokens/s")
    print(f"ratio vectorised / per-document: {best[True][0] / best[False][0]:.2f}x")

    people = np.arange(min(args.n, 20000))
    texts = [d.text for d in source.documents(1, people)]
    t0 = time.perf_counter()
    for text in texts:
        tok.hf.encode(text, add_special_tokens=False)
    base = len(texts) / (time.perf_counter() - t0)
    print(
        f"baseline (HF tokenizer encode of each full text, rendering excluded): {base:,.0f} docs/s"
    )
    print(f"ratio per-document / baseline: {best[False][0] / base:.2f}x")
    print(f"ratio vectorised / baseline: {best[True][0] / base:.2f}x")


if __name__ == "__main__":
    main()
