"""The GPU check's figures (issue 12): environment, training throughput and MFU of a ~20M-param
GPT2, packed lab models, and one capacity point -- each printed as one JSON line.

Run through ``benchmarks/gpu_check.sh``; ``--rehearse`` shrinks every stage to seconds so that
the same entry point can be tried on a CPU before a GPU is lent.

Stages:

- ``env``: torch, CUDA, the device and its peak FLOP/s in kcap's table (None: unknown);
- ``throughput``: a ~20M-parameter GPT2 (gpt2-6-8, P 19.4M) on bioS for a fixed number of
  steps, tokens/s over the steps after the first log window, MFU, compile time;
- ``packed``: one lab model alone vs K = 64 packed lab models (`kcap.training.packed`);
- ``capacity``: the largest GPT2 of the gpu recipes' shapes whose bioS run at 1000 exposures
  fits the time budget (measured throughput of each shape decides N), trained and measured:
  R, recall, wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from kcap.training.config import parse_config
from kcap.training.mfu import peak_flops
from kcap.training.trainer import Trainer, autocast_dtype, resolve_device

#: The gpu recipes' GPT2 shapes, smallest first (configs/recipes/shared/gpu.yaml).
SHAPES = [
    ("gpt2-2-1", {"d_model": 32}),
    ("gpt2-2-1", {"d_model": 48}),
    ("gpt2-2-1", {}),
    ("gpt2-4-1", {}),
    ("gpt2-2-2", {}),
    ("gpt2-4-2", {}),
    ("gpt2-6-2", {}),
    ("gpt2-8-2", {}),
]
BITS_PER_PERSON = 64.6  # bioS online, BPE 1024 (77,540 bits / 1,200 people, results/lab)


def emit(stage: str, **figures) -> None:
    print(json.dumps({"stage": stage, **figures}), flush=True)


def config(
    n: int, preset: str, overrides: dict, exposures: int, batch: int, data=None, **training
) -> dict:
    """A bioS run config (``data``: an existing dataset directory to train on instead)."""
    dataset = {"kind": "bios", "n": n, "seed": 0, "variant": "online", "vocab": 1024}
    return {
        "name": f"gpu-check-{preset}",
        "dataset": dataset if data is None else {"path": str(data)},
        "model": {"preset": preset, "overrides": overrides},
        "training": {
            "exposures": exposures,
            "batch_size": batch,
            "window": 512,
            "lr": 1e-3,
            "weight_decay": 0.02,
            "checkpoint_every": 10**9,
            "log_every": 20,
            **training,
        },
        "measurement": {"batch_size": 256},
    }


def train_steps(raw: dict, run_dir: Path, steps: int) -> dict:
    """Train ``steps`` steps; tokens/s after the first log window, MFU, compile time."""
    trainer = Trainer(parse_config(raw), run_dir, progress=False)
    t0 = time.perf_counter()
    trainer.fit(stop_at=steps)
    wall = time.perf_counter() - t0
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "tokens_per_s" in r][1:]  # the first window holds warm-up
    summary = trainer.summary()
    return {
        "P": trainer.params["P"],
        "steps": trainer.step,
        "tokens_per_s": sum(r["tokens_per_s"] for r in logged) / max(1, len(logged)),
        "mfu": logged[-1].get("mfu") if logged else None,
        "compile_s": summary.get("compile_s"),
        "wall_s": wall,
        "mean_tokens_per_document": trainer.dataset.manifest["vocab"]["mean_tokens_per_document"],
    }


def stage_env() -> None:
    device = resolve_device("auto")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    emit(
        "env",
        torch=torch.__version__,
        cuda=torch.version.cuda,
        device=name,
        peak_flops_bf16=peak_flops(device, autocast_dtype("auto", device)),
        python=sys.version.split()[0],
    )


def stage_throughput(out: Path, rehearse: bool) -> None:
    preset, steps, batch, n = ("gpt2-2-1", 40, 4, 300) if rehearse else ("gpt2-6-8", 300, 64, 5000)
    data = None
    for compile_ in (False,) if rehearse else (False, True):  # compiling on a CPU takes minutes
        raw = config(n, preset, {}, exposures=50, batch=batch, data=data, compile=compile_)
        run_dir = out / f"throughput-compile{int(compile_)}"
        figures = train_steps(raw, run_dir, steps)
        data = data or run_dir / "dataset"
        emit("throughput", preset=preset, batch=batch, compile=compile_, **figures)


def stage_packed(out: Path, rehearse: bool) -> None:
    """One lab model alone vs K packed (tokens/s): what packing buys on this device."""
    from bench_pack import Bench  # benchmarks/, the script's own folder

    device = resolve_device("auto").type
    k, steps = (4, 10) if rehearse else (64, 200)
    bench = Bench(out / "packed", k, 32, 800, threads=torch.get_num_threads(), device=device)
    one_tokens, one_s = bench.sequential(steps, k=1)
    pack_tokens, pack_s = bench.packed(steps)
    emit(
        "packed",
        model="gpt2-2-2 d 32, batches of 4 x 128 (the lab's)",
        device=device,
        K=k,
        steps=steps,
        single_tokens_per_s=round(one_tokens / one_s),
        packed_tokens_per_s=round(pack_tokens / pack_s),
        ratio=round((pack_tokens / pack_s) / (one_tokens / one_s), 2),
    )


def stage_capacity(out: Path, rehearse: bool, budget_s: float) -> None:
    """Pick the largest shape whose 1000-exposure run fits the budget with data bits at least
    twice what the paper's 2 bits/param would hold, then train and measure it."""
    exposures = 20 if rehearse else 1000
    batch = 4 if rehearse else 96
    shapes = SHAPES[:2] if rehearse else SHAPES
    chosen, smallest, data = None, None, None
    for i, (preset, overrides) in enumerate(shapes):
        raw = config(300, preset, overrides, exposures=50, batch=batch, data=data)
        probe = train_steps(raw, out / f"probe-{i}", 40)
        data = data or out / f"probe-{i}" / "dataset"  # one probe dataset for every shape
        tokens = budget_s * probe["tokens_per_s"]
        n = int(tokens / (exposures * probe["mean_tokens_per_document"]))
        fits = n * BITS_PER_PERSON >= 2 * 2 * probe["P"]
        emit("capacity-probe", preset=preset, overrides=overrides, P=probe["P"],
             tokens_per_s=round(probe["tokens_per_s"]), n_in_budget=n, fits=fits)  # fmt: skip
        smallest = smallest or (preset, overrides, n)
        if fits:
            chosen = (preset, overrides, n)
    note = None
    if chosen is None:  # still a figure, but of a model with more room than data
        chosen, note = smallest, "data-limited: no shape's N in the budget fills twice its 2P bits"
    preset, overrides, n = chosen
    n = max(100, min(n, 50_000))
    raw = config(n, preset, overrides, exposures=exposures, batch=batch)
    t0 = time.perf_counter()
    trainer = Trainer(parse_config(raw), out / "capacity", progress=False)
    result = trainer.fit()
    wall = time.perf_counter() - t0
    emit(
        "capacity",
        preset=preset,
        overrides=overrides,
        N=n,
        exposures=exposures,
        P=result.P,
        bits=round(result.bits["total"]),
        data_bits=round(result.data_bits),
        R=round(result.R, 3),
        R_max=round(result.R_max, 3),
        recall=round(result.recall_accuracy, 4),
        steps=trainer.step,
        tokens_per_s=round(trainer.summary()["tokens_per_s"]),
        wall_s=round(wall, 1),
        **({"note": note} if note else {}),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["env", "throughput", "packed", "capacity"])
    parser.add_argument("--out", type=Path, default=Path("gpu-check-out"))
    parser.add_argument("--rehearse", action="store_true", help="tiny sizes, for a CPU")
    parser.add_argument("--budget", type=float, default=200.0, help="capacity training seconds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "env":
        stage_env()
    elif args.stage == "throughput":
        stage_throughput(args.out, args.rehearse)
    elif args.stage == "packed":
        stage_packed(args.out, args.rehearse)
    else:
        stage_capacity(args.out, args.rehearse, math.inf if args.budget <= 0 else args.budget)


if __name__ == "__main__":
    main()
