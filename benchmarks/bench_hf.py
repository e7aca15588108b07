"""Training tokens/s of our GPT presets against the equivalent Hugging Face models (issue 13).

For each shape (layers x d_model x heads) and family (gpt2 -> GPTNeoXForCausalLM, llama ->
LlamaForCausalLM) both models start from identical weights (`kcap.models.hf.to_hf`) and take full
training steps on the same batch (default: 4 windows x 128 tokens, vocab 1024, fp32, CPU, one
thread):

* ours: `Trainer.train_step` itself -- warmup/cosine lr per group, forward, cross-entropy with
  ignore_index PAD, backward, finiteness checks, `clip_grad_norm_` 1.0, AdamW step,
  zero_grad(set_to_none=True) -- on the optimizer `make_optimizer` builds with ``fused=True``
  (the trainer change issue 13 asks for; ``--no-fused``: the unfused AdamW the trainer builds on
  a CPU before it);
* HF: a plain loop: ``model(input_ids=x, use_cache=False).logits``, `F.cross_entropy` with the
  same ignore_index, backward, `clip_grad_norm_` 1.0, `torch.optim.AdamW` (default
  implementation, the same lr, betas, eps and weight decay), zero_grad(set_to_none=True).

The step-0 losses must agree (same function, same weights). After warmup the models take turns,
a short block of steps each per round, for ``--repeats`` rounds: tokens/s come from the median
block, and a ratio to HF is the median over rounds of HF's block time over the model's in the
same round (paired, so a shared machine's drifting load cancels); the best blocks are printed
too. ``--ablate`` adds variants of ours that take the changes of issue 13 one at a time:
"before" (the unfused AdamW and every `kcap.models.gpt.FAST_PATHS` off: the code before it),
"+fused_adamw", "+rotary", "+norms", "+head", then "ours" (+loss): each row's ratio over the
row above is what that change bought.

    python benchmarks/bench_hf.py                       # the four issue-13 shapes, 1 thread
    python benchmarks/bench_hf.py --shapes 2x32x2 --families gpt2 --ablate --clock cpu
    python benchmarks/bench_hf.py --compile             # adds torch.compile(ours), reported apart
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import platform
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from kcap.models import GPT, gpt, preset
from kcap.models.hf import to_hf
from kcap.tokenization.stream import PAD
from kcap.training import distributed
from kcap.training.config import TrainingSpec
from kcap.training.schedule import make_optimizer
from kcap.training.trainer import Trainer

# (layers, d_model, heads): the issue's shapes; heads give head_dim 16, 32, 32, 64
SHAPES = ((2, 32, 2), (2, 64, 2), (4, 128, 4), (6, 256, 4))
FAMILIES = {"gpt2": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM"}
CHANGES = ("fused_adamw", "rotary", "norms", "head", "loss")  # what --ablate adds one at a time
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def parse_shape(text: str) -> tuple[int, int, int]:
    layers, d, heads = (int(v) for v in text.split("x"))
    return layers, d, heads


def our_trainer(model: GPT, spec: TrainingSpec, *, fused: bool, compiled: bool) -> Trainer:
    """A `Trainer` holding just what `train_step` reads (no dataset, no run directory), with the
    optimizer `Trainer.__init__` builds (``fused`` as it would pass it)."""
    tr = Trainer.__new__(Trainer)
    tr.cfg = SimpleNamespace(training=spec)
    tr.device, tr.amp, tr.world = torch.device("cpu"), None, distributed.World()
    tr.model = model
    tr._forward = torch.compile(model) if compiled else model
    tr.optimizer = make_optimizer(model, spec, fused=fused)
    tr.step, tr.tokens, tr.total_steps, tr.warmup = 0, 0, 10**9, 100
    tr.lr_scale, tr.skipped_steps, tr._bad_step = 1.0, 0, None
    return tr


@contextlib.contextmanager
def fast_paths(on: set[str]):
    """Switch the model's float32 fast paths: those in ``on`` on, the others off."""
    saved = dict(gpt.FAST_PATHS)
    gpt.FAST_PATHS.update({k: k in on for k in saved})
    try:
        yield
    finally:
        gpt.FAST_PATHS.update(saved)


def hf_step_fn(hf: torch.nn.Module, spec: TrainingSpec, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.AdamW(
        hf.parameters(),
        lr=spec.lr,
        betas=(spec.beta1, spec.beta2),
        eps=spec.eps,
        weight_decay=spec.weight_decay,
    )

    def step() -> torch.Tensor:
        logits = hf(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=PAD)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), spec.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def variants(args) -> dict[str, set[str]]:
    """Our variants: name -> the changes on ("ours": all of them)."""
    if not args.ablate:
        return {"ours": set(CHANGES) - ({"fused_adamw"} if args.no_fused else set())}
    out = {"before": set()}
    for i, c in enumerate(CHANGES[:-1]):
        out[f"+{c}"] = set(CHANGES[: i + 1])
    return out | {"ours": set(CHANGES)}


def bench_one(family: str, shape, args, clock) -> dict:
    layers, d, heads = shape
    spec = TrainingSpec(batch_size=args.batch, window=args.seq, device="cpu", dtype="float32")
    cfg = preset(f"{family}-{layers}-{heads}", args.vocab, d_model=d, context=args.seq)
    torch.manual_seed(0)
    ours = GPT(cfg).train()
    hf = to_hf(ours).train()  # identical weights
    g = torch.Generator().manual_seed(1)
    w = torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=g)
    x, y = w[:, :-1].contiguous(), w[:, 1:].contiguous()
    n_targets = int((y != PAD).sum())

    with torch.no_grad():  # same function, same weights: the comparison is fair
        l_ours = F.cross_entropy(ours(x).flatten(0, 1), y.flatten(), ignore_index=PAD)
        l_hf = F.cross_entropy(hf(input_ids=x).logits.flatten(0, 1), y.flatten(), ignore_index=PAD)
        with fast_paths(set()):
            l_ref = F.cross_entropy(ours(x).flatten(0, 1), y.flatten(), ignore_index=PAD)
    torch.testing.assert_close(l_ours, l_hf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(l_ours, l_ref, rtol=1e-6, atol=1e-6)

    steps = {}
    for name, on in variants(args).items():
        tr = our_trainer(copy.deepcopy(ours), spec, fused="fused_adamw" in on, compiled=False)

        def step(tr=tr, on=on):
            with fast_paths(on):
                return tr.train_step(x, y, n_targets)

        steps[name] = step
    steps["hf"] = hf_step_fn(hf, spec, x, y)
    compile_s = None
    if args.compile:
        tr_c = our_trainer(copy.deepcopy(ours), spec, fused=not args.no_fused, compiled=True)
        t0 = time.perf_counter()
        tr_c.train_step(x, y, n_targets)
        compile_s = time.perf_counter() - t0
        steps["compiled"] = lambda: tr_c.train_step(x, y, n_targets)

    def timed(step, n: int) -> float:
        t0 = clock()
        for _ in range(n):
            step()
        return (clock() - t0) / n

    # warm up, and size each block to about --block-s seconds of the slowest model
    n = max(1, round(args.block_s / max(timed(s, args.warmup) for s in steps.values())))
    blocks: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(args.repeats):  # take turns, starting from a different model each round
        for k in names[r % len(names) :] + names[: r % len(names)]:
            blocks[k].append(timed(steps[k], n))
    tokens = args.batch * args.seq
    med = {k: statistics.median(v) for k, v in blocks.items()}
    best = {k: min(v) for k, v in blocks.items()}
    base = blocks["hf"]
    paired = {
        k: statistics.median(a / b for a, b in zip(base, v, strict=True)) for k, v in blocks.items()
    }
    row = {
        "family": family,
        "shape": shape,
        "params": sum(p.numel() for p in ours.parameters()),
        "loss0": float(l_ours),
        "steps_per_block": n,
        "tps": {k: tokens / t for k, t in med.items()},
        "best_tps": {k: tokens / t for k, t in best.items()},
        "ratio": paired,
        "best_ratio": {k: best["hf"] / t for k, t in best.items()},
    }
    if compile_s is not None:
        row["compile_s"] = compile_s
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shapes", nargs="+", type=parse_shape, default=list(SHAPES), help="LxDxH, e.g. 2x32x2"
    )
    ap.add_argument("--families", nargs="+", choices=tuple(FAMILIES), default=list(FAMILIES))
    ap.add_argument("--batch", type=int, default=4, help="windows per step")
    ap.add_argument("--seq", type=int, default=128, help="tokens per window (= context)")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model")
    ap.add_argument("--repeats", type=int, default=40, help="rounds of timed blocks (>= 3)")
    ap.add_argument("--block-s", type=float, default=0.05, help="seconds per block (>= 1 step)")
    ap.add_argument("--no-fused", action="store_true", help="ours with the unfused AdamW")
    ap.add_argument("--ablate", action="store_true", help="add the changes one at a time")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(ours)")
    ap.add_argument(
        "--clock", choices=tuple(CLOCKS), default="wall", help="wall, or this thread's CPU time"
    )
    args = ap.parse_args()
    if args.repeats < 3:
        ap.error("--repeats must be at least 3")

    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    print(
        f"# {datetime.date.today()}  torch {torch.__version__}  transformers "
        f"{transformers.__version__}  {platform.machine()}  threads {args.threads}  batch "
        f"{args.batch}x{args.seq}  vocab {args.vocab}  fp32 CPU  {args.clock} clock  "
        f"{args.repeats} rounds  ours: AdamW {'unfused' if args.no_fused else 'fused'}"
    )
    rows = []
    for shape in args.shapes:
        for family in args.families:
            r = bench_one(family, shape, args, CLOCKS[args.clock])
            rows.append(r)
            L, d, h = shape
            print(
                f"\n{family} {L}x{d} ({h} heads), {r['params']:,} params, loss0 "
                f"{r['loss0']:.4f}, {r['steps_per_block']} steps per block"
            )
            print(f"  {'':12} {'tok/s':>8} {'vs HF':>6}   {'best tok/s':>10} {'vs HF':>6}")
            for k in r["tps"]:
                print(
                    f"  {k:12} {r['tps'][k]:8,.0f} {r['ratio'][k]:5.2f}x   "
                    f"{r['best_tps'][k]:10,.0f} {r['best_ratio'][k]:5.2f}x"
                )
            if "compile_s" in r:
                print(f"  compiled: first step (compilation) {r['compile_s']:.1f} s")
    head = "| family | layers × d (heads) | ours tokens/s | HF tokens/s | ratio | best-block |"
    print(f"\n{head}\n|---|---|---|---|---|---|")
    for r in rows:
        L, d, h = r["shape"]
        print(
            f"| {r['family']} vs {FAMILIES[r['family']]} | {L} × {d} ({h}) | "
            f"{r['tps']['ours']:,.0f} | {r['tps']['hf']:,.0f} | {r['ratio']['ours']:.2f}× | "
            f"{r['best_ratio']['ours']:.2f}× |"
        )


if __name__ == "__main__":
    main()
