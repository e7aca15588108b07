"""Write the recipe grids (twelve results x lab / gpu / paper, and bioR) from one table of scales.

    python configs/recipes/make_recipes.py          # rewrite configs/recipes/*.yaml

The recipes are generated so that the three scales of a result share their structure and the
numbers live in one place; edit this file, not the YAML (a test checks they agree). See
configs/README.md for what each scale is and how the lab scale was calibrated.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------- scales

#: Tokens per rendered document, <|eos|> included (measured on generated datasets): bioS with a
#: 1024-token BPE, and the lab's bioD probe.
TOKENS_PER_DOC = {"bios": 91, "probe": 56}
#: Training throughput, tokens/s, for the cost estimates in each recipe's header. lab: measured
#: (recipe 01's runs: GPT2-2-2 at d 16-32, batches of 4 x 128 tokens, one thread per worker:
#: about 50k tokens/s each), two workers; gpu: an estimate, not yet measured.
THROUGHPUT = {"lab": 100_000, "gpu": 2_000_000}

SCALES = {
    "lab": "this 2-core CPU, `--workers 2`; about an hour per result at most",
    "gpu": "one GPU; a few minutes per point (throughput estimated, not yet measured)",
    "paper": "the paper's N values, model grid and hyperparameter tables (a cluster)",
}


def training(scale: str, exposures: int, **kw) -> dict:
    """Training defaults per scale; keyword arguments override."""
    if scale == "lab":
        # Measured on the bioD probe (configs/README.md): lr 3e-3 (2e-3 stored a third less),
        # weight decay 0.1, batches of 4 x 128 tokens (LAB_BATCH_100 windows at 100 exposures).
        t = {
            "batch_size": 4 if exposures >= 300 else LAB_BATCH_100,
            "window": 128,
            "lr": 3.0e-3,
            "weight_decay": 0.1,
            "checkpoint_every": 5000,
            "log_every": 100,
        }
    else:
        t = {
            "batch_size": 96,
            "window": 512,
            "lr": 1.0e-3,
            "weight_decay": 0.02 if exposures >= 1000 else 0.01,
            "checkpoint_every": 5000,
            "log_every": 100,
        }
    return {"exposures": exposures, **t, **kw}


def measurement(scale: str, exposures: int) -> dict:
    lab_every = 20_000 if exposures >= 1000 else 5_000 if exposures >= 300 else 2_000
    every = {"lab": lab_every, "gpu": 5_000, "paper": 20_000}[scale]
    people = {"lab": 200, "gpu": 500, "paper": 1000}[scale]
    return {
        "every": every,
        "during_max_people": people,
        "batch_size": 200 if scale == "lab" else 100,
    }


def bios(scale: str, variant: str = "online") -> dict:
    return {
        "kind": "bios",
        "seed": 0,
        "variant": variant,
        "vocab": 4096 if scale == "paper" else 1024,
    }


#: The lab's knowledge data, standing in for bioS: the bioD probe. One-token values (K = 8
#: attributes, each C = 1 chunk of L = 1 token from D = 128 values over T = 128 tokens) in one
#: sentence template, so tiny models learn it; bioS's ~300 templates cost them most of their
#: budget and they stay far from capacity (configs/README.md).
LAB_PROBE = {"k": 8, "c": 1, "d": 128, "l": 1, "t": 128}


def probe(**kw) -> dict:
    return {"kind": "biod", "seed": 0, **LAB_PROBE, "vocab": 1024, **kw}


#: People of the lab's repetitive junk. The paper repeats bioS(1000), about 75k bits: a small
#: share of its 100-exposure models' capacity (P >= 550k). Against the lab's d32 model (about 50k
#: bits) 1000 bioD people would be 1.5x its capacity, and they crowded out every useful bit
#: (measured: 0 bits of N = 800); 50 people (3.7k bits) keep the paper's proportion.
LAB_REPETITIVE_N = 50


def junk(scale: str, kind: str, domain: str = "none") -> dict:
    d = {"kind": "junk", "seed": 0, "ratio": 7, "junk": kind}
    if scale == "lab":  # junk mixed into the probe: useful bioD people, bioD junk
        d |= {"useful": "biod", **LAB_PROBE}
        if kind == "repetitive":
            d["junk_n"] = LAB_REPETITIVE_N
    d["vocab"] = 4096 if scale == "paper" else 1024
    if domain != "none":
        d["domain"] = domain
    return d


# --------------------------------------------------------------------------- model grids

#: The lab's models: GPT2-2-2 (two heads) at d = 16, 24, 32; P ~ 19k, 33k, 50k on the probe.
LAB_PRESET = "gpt2-2-2"
#: Batches at 100 exposures, in windows of 128 tokens (measured: configs/README.md).
LAB_BATCH_100 = 4
#: The lab's 100-exposure grid: d_model -> N (recipe 04, the baseline of 06, 07 and 09-12).
LAB_100 = {32: [1600, 800, 400], 24: [1600, 800, 400], 16: [800, 400, 200]}
#: N of the lab's other 100-exposure studies (d 32): two datasets it cannot fully store.
LAB_100_N = [800, 400]
#: Training tokens/s of the lab's 32-expert MoE (d16), two workers: an estimate.
MOE_LAB_RATE = 50_000


def width_blocks(table: dict[int, list[int]]) -> list[dict]:
    """One block per lab width: d_model -> the N it meets."""
    return [
        {"name": f"d{d}", "set": {"model.overrides.d_model": d}, "product": {"dataset.n": ns}}
        for d, ns in table.items()
    ]


def lab_archs(archs: dict, d: int) -> dict:
    """A zip block over architectures at the lab's shape: 2 layers, 2 heads, width d."""
    return {
        "model.preset": [f"{p.split('-')[0]}-2-2" for p, _ in archs.values()],
        "model.overrides": [{**o, "d_model": d, "n_head": 2} for _, o in archs.values()],
    }


#: The GPU scale's small GPT2 shapes (d = 64h unless given): P ~ 48k, 90k, 145k, 244k, 486k,
#: 880k, 1.7M with a 1024-token BPE.
GPU_1000 = [
    ("gpt2-2-1", 32),
    ("gpt2-2-1", 48),
    ("gpt2-2-1", None),
    ("gpt2-4-1", None),
    ("gpt2-2-2", None),
]
GPU_100 = [
    ("gpt2-2-1", None),
    ("gpt2-4-1", None),
    ("gpt2-2-2", None),
    ("gpt2-4-2", None),
    ("gpt2-8-2", None),
]

#: Candidate GPT2-l-h shapes for the paper grid ("most natural combinations", l >= 2).
_LAYERS = (2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 28)
_HEADS = (2, 4, 6, 8, 10, 12, 16, 20)


def paper_p(layers: int, heads: int, used_tokens: int = 3275, moe: bool = False) -> float:
    """P(GPT2-l-h) = 12 l d^2 + 3275 d (paper §2.6); MoE-32: attention 4d^2 + 32 experts 2d^2."""
    d = 64 * heads
    per_layer = (4 + 64) * d * d if moe else 12 * d * d
    return layers * per_layer + used_tokens * d


def paper_grid(
    n: int,
    *,
    lo: float = 11,
    hi: float = 360,
    cap: float = 7.2e8,
    step: float = 1.3,
    moe: bool = False,
) -> list[str]:
    """GPT2 shapes with P in [lo N, hi N] (the paper's Figure 1 range), near-duplicates dropped."""
    cands = sorted((paper_p(ell, h, moe=moe), ell, h) for ell in _LAYERS for h in _HEADS)
    kept, last = [], 0.0
    for p, ell, h in cands:
        if lo * n <= p <= min(hi * n, cap) and p >= last * step:
            kept.append(f"gpt2-{ell}-{h}" + ("-moe32" if moe else ""))
            last = p
    return kept


def n_batches(table: dict[int, int]) -> dict:
    """A zip block advancing N and its batch size together (N -> batch)."""
    return {"dataset.n": list(table), "training.batch_size": list(table.values())}


def models(shapes: list[tuple[str, int | None]]) -> dict:
    """A zip block over (preset, d_model) pairs; d_model None means the preset's 64h."""
    return {
        "model.preset": [s for s, _ in shapes],
        "model.overrides": [{"d_model": d} if d else {} for _, d in shapes],
    }


# --------------------------------------------------------------------------- paper tables

K = 1000
M = 1_000_000
#: Parameter 1 (GPT2, bioS, 1000 exposures): N -> (wd, lr, batch[, only model]).
P1 = {
    10 * K: (0.02, 1e-3, 24),
    20 * K: (0.02, 1e-3, 48),
    50 * K: (0.02, 1e-3, 96),
    100 * K: (0.02, 1e-3, 192),
    200 * K: (0.02, 1e-3, 192),
    500 * K: (0.01, 5e-4, 192),
    1 * M: (0.01, 5e-4, 192),
    2 * M: (0.005, 3e-4, 1536, "gpt2-16-8"),
    5 * M: (0.002, 3e-4, 1536, "gpt2-6-20"),
    10 * M: (0.001, 3e-4, 1536, "gpt2-20-16"),
}
#: Parameter 2 (GPT2, bioS, 100 exposures): N -> (wd, [lr options], batch).
P2 = {
    50 * K: (0.01, [1e-3], 12),
    100 * K: (0.01, [1e-3], 24),
    200 * K: (0.01, [1e-3], 48),
    500 * K: (0.01, [5e-4], 96),
    1 * M: (0.01, [5e-4], 192),
    2 * M: (0.01, [3e-4, 5e-4, 1e-3], 384),
    5 * M: (0.01, [3e-4, 5e-4], 768),
    10 * M: (0.01, [2e-4, 3e-4, 5e-4], 1024),
    20 * M: (0.002, [2e-4, 3e-4, 5e-4], 1536),
}
#: Parameter 6 (LLaMA/Mistral, 1000 exposures): N -> [lr options] (wd and batch as P1).
P6_LR = {n: ([5e-4, 1e-3, 2e-3] if n <= 200 * K else [2e-4, 3e-4, 5e-4]) for n in P1 if n <= M}
#: Parameter 7 (100 exposures): (a) LLaMA/Mistral/GPT2_0 and (b) GPT2_1/4, N -> [lr options].
P7A = {
    50 * K: [3e-4, 5e-4, 1e-3],
    100 * K: [3e-4, 5e-4, 1e-3],
    200 * K: [3e-4, 5e-4, 1e-3],
    500 * K: [2e-4, 3e-4, 5e-4],
    1 * M: [2e-4, 3e-4, 5e-4],
}
P7B = {
    50 * K: [5e-4, 1e-3],
    100 * K: [5e-4, 1e-3],
    200 * K: [5e-4, 1e-3],
    500 * K: [3e-4, 5e-4],
    1 * M: [3e-4, 5e-4],
}
#: Parameter 9 (MoE): 1000 exposures N -> [lr]; 100 exposures N -> (wd, [lr], batch).
P9_1000 = {n: ([1e-3, 2e-3] if n <= 200 * K else [5e-4, 1e-3]) for n in P1 if n <= M}
P9_100 = {
    50 * K: (0.01, [1e-3, 2e-3, 5e-3], 12),
    100 * K: (0.01, [1e-3, 2e-3, 5e-3], 24),
    200 * K: (0.01, [1e-3, 2e-3, 5e-3], 48),
    500 * K: (0.01, [1e-3, 2e-3], 96),
    1 * M: (0.01, [5e-4, 1e-3, 2e-3], 192),
}
#: Parameter 10 (junk, Figure 8): panel -> {N: (wd, [lr options], batch)}.
_L3 = [3e-4, 5e-4, 1e-3]
P10 = {
    ("random", 100): {
        50 * K: (0.01, _L3, 12),
        100 * K: (0.01, _L3, 24),
        200 * K: (0.01, _L3, 48),
        500 * K: (0.005, [5e-5, 1e-4, 2e-4, 3e-4, 5e-4], 192),
        1 * M: (0.005, [5e-5, 1e-4, 2e-4, 3e-4, 5e-4], 192),
    },
    ("random", 300): {
        50 * K: (0.01, _L3, 96),
        100 * K: (0.01, _L3, 192),
        200 * K: (0.01, _L3, 192),
        500 * K: (0.01, _L3, 192),
    },
    ("random", 600): {
        50 * K: (0.01, _L3, 384),
        100 * K: (0.01, _L3, 384),
        200 * K: (0.01, _L3, 384),
        500 * K: (0.002, _L3, 768),
    },
    ("random", 1000): {
        50 * K: (0.01, [5e-4, 1e-3], 384),
        100 * K: (0.01, [5e-4, 1e-3], 768),
        200 * K: (0.01, [5e-4, 1e-3], 1536),
    },
    ("repetitive", 100): {
        50 * K: (0.01, [3e-4, 5e-4], 12),
        100 * K: (0.01, [3e-4, 5e-4], 24),
        200 * K: (0.01, _L3, 96),
        500 * K: (0.01, [3e-4, 5e-4], 192),
        1 * M: (0.01, [3e-4], 192),
    },
    ("domain", 100): {
        50 * K: (0.01, _L3, 12),
        100 * K: (0.01, _L3, 24),
        200 * K: (0.01, [2e-4, *_L3], 96),
        500 * K: (0.005, [2e-4, 3e-4, 5e-4], 192),
        1 * M: (0.005, [2e-4, 3e-4, 5e-4], 192),
    },
    ("domain", 300): {
        50 * K: (0.01, _L3, 96),
        100 * K: (0.01, _L3, 192),
        200 * K: (0.01, _L3, 192),
        500 * K: (0.005, _L3, 384),
    },
}

ABLATIONS = [
    "01-llama",
    "02-llama-tied",
    "03-llama-tied-standard-mlp",
    "04-llama-tied-standard-mlp-gelu",
    "05-llama-tied-standard-mlp-gelu-layernorm-bias",
]


def per_n_blocks(
    table: dict,
    shapes_of,
    *,
    lr_key: bool = False,
    extra_set: dict | None = None,
    moe: bool = False,
) -> list[dict]:
    """One block per N from a paper table: its wd/lr/batch and its own model grid."""
    blocks = []
    for n, row in table.items():
        wd, lr, batch = row[0], row[1], row[2]
        only = row[3] if len(row) > 3 else None
        shapes = [only] if only else shapes_of(n)
        block = {
            "name": f"N={n:,}",
            "set": {
                "dataset.n": n,
                "training.weight_decay": wd,
                "training.batch_size": batch,
                **(extra_set or {}),
            },
            "product": {"model.preset": shapes},
        }
        if isinstance(lr, list):
            block["product"]["training.lr"] = lr
        else:
            block["set"]["training.lr"] = lr
        blocks.append(block)
    return blocks


# --------------------------------------------------------------------------- the recipes


def recipes() -> dict[str, dict]:
    """file stem -> {"meta": header facts, "grid": the grid mapping}."""
    out: dict[str, dict] = {}

    def add(stem, result, scale, figure, claim, grid, *, calibrated=False, cost=None, notes=""):
        grid = {"name": stem, "result": result, "scale": scale, **grid}
        out[stem] = {
            "meta": {
                "result": result,
                "scale": scale,
                "figure": figure,
                "claim": claim,
                "calibrated": calibrated,
                "cost": cost,
                "notes": notes,
            },
            "grid": grid,
        }

    lab_base = lambda ds, e, **t: {  # noqa: E731
        "dataset": ds,
        "model": {"preset": LAB_PRESET, "overrides": {"d_model": 32, "n_head": 2}},
        "training": training("lab", e, **t),
        "measurement": measurement("lab", e),
    }
    gpu_base = lambda ds, e, **t: {  # noqa: E731
        "dataset": ds,
        "model": {"preset": "gpt2-2-1"},
        "training": training("gpu", e, **t),
        "measurement": measurement("gpu", e),
    }
    paper_base = lambda ds, e, **t: {  # noqa: E731
        "dataset": ds,
        "model": {"preset": "gpt2-12-12"},
        "training": training("paper", e, **t),
        "measurement": measurement("paper", e),
    }
    lab_d = lambda *ds: {"model.overrides.d_model": list(ds)}  # noqa: E731
    stand_in = "On the bioD probe, the lab's stand-in for bioS (configs/README.md). "

    # 1 -- bioS, 1000 exposures, GPT2 (Figure 1a)
    c1 = "peak R >= 2 for every N, any depth/width; no model above 2.3"
    lab1 = {32: [1600, 800], 24: [1600, 800, 400], 16: [800, 400, 200]}
    add(
        "01-bios-1000-lab",
        1,
        "lab",
        "Figure 1(a)",
        c1,
        {
            "base": lab_base(probe(), 1000),
            "blocks": width_blocks(lab1),
        },
        calibrated=True,
        cost=_cost("lab", [n for ns in lab1.values() for n in ns], 1000, per_doc="probe"),
        notes=stand_in + "P is about 19k (d16), 33k (d24) and 50k (d32); each model meets "
        "datasets of more bits (about 74 per person) than it holds, so its bits stop rising "
        "with N.",
    )
    gpu_n = {1000: 4, 2000: 8, 5000: 16}
    add(
        "01-bios-1000-gpu",
        1,
        "gpu",
        "Figure 1(a)",
        c1,
        {
            "base": gpu_base(bios("gpu"), 1000),
            "zip": [
                n_batches(gpu_n),
                models(GPU_1000),
            ],
        },
        cost=_cost("gpu", list(gpu_n) * len(GPU_1000), 1000),
    )
    add(
        "01-bios-1000-paper",
        1,
        "paper",
        "Figure 1(a)",
        c1,
        {"base": paper_base(bios("paper"), 1000), "blocks": per_n_blocks(P1, paper_grid)},
        notes="Parameter 1; N >= 2M train the single model the paper names.",
    )

    # 2 -- bioS-simple (and bioR), 1000 exposures (Figure 11)
    c2 = "bioS-simple and bioR: about 2, slightly lower than bioS"
    add(
        "02-simple-lab",
        2,
        "lab",
        "Figure 11",
        c2,
        {
            "base": lab_base(bios("lab", "simple"), 1000),
            "product": {"dataset.n": [400, 800], **lab_d(24, 32)},
        },
        cost=_cost("lab", [400, 800] * 2, 1000),
        notes="Whether one template per attribute makes bioS learnable by the lab's models is "
        "not measured yet (bioS itself is not: configs/README.md), and the lab has no bioS law "
        "to compare with. bioR is not run at lab scale: paraphrasing with a local LLM on 2 "
        "CPU cores would take days.",
    )
    add(
        "02-simple-gpu",
        2,
        "gpu",
        "Figure 11",
        c2,
        {
            "base": gpu_base(bios("gpu", "simple"), 1000),
            "zip": [
                n_batches(gpu_n),
                models(GPU_1000),
            ],
        },
        cost=_cost("gpu", list(gpu_n) * len(GPU_1000), 1000),
    )
    add(
        "02-simple-paper",
        2,
        "paper",
        "Figure 11",
        c2,
        {
            "base": paper_base(bios("paper", "simple"), 1000),
            "blocks": per_n_blocks({n: r for n, r in P1.items() if n <= M}, paper_grid),
        },
        notes="Parameter 4 = Parameter 1.",
    )

    def bior(scale: str) -> dict:
        return {
            "kind": "bior",
            "seed": 0,
            "rewrites": 40,
            "rewriter": "REPLACE-WITH-A-LOCAL-HF-CAUSAL-LM",
            "vocab": 4096 if scale == "paper" else 1024,
        }

    add(
        "02-bior-gpu",
        2,
        "gpu",
        "Figure 11(b)",
        c2,
        {
            "needs": ["dataset.kind=bior"],
            "base": gpu_base(bior("gpu"), 1000),
            "zip": [{"dataset.n": [1000, 2000], "training.batch_size": [4, 8]}],
            "product": {"model.preset": ["gpt2-2-1", "gpt2-4-1", "gpt2-2-2"]},
        },
        notes="Run with --set dataset.rewriter=PATH (a local Hugging Face causal LM, e.g. a "
        "LLaMA-2 chat model); generating 40 rewrites per person dominates the cost.",
    )
    add(
        "02-bior-paper",
        2,
        "paper",
        "Figure 11(b)",
        c2,
        {
            "needs": ["dataset.kind=bior"],
            "base": paper_base(bior("paper"), 1000),
            "blocks": per_n_blocks({n: r for n, r in P1.items() if n <= M}, paper_grid),
        },
        notes="Run with --set dataset.rewriter=PATH (LLaMA-2, as the paper). Parameter 4.",
    )

    # 3 -- bioD (Figures 2, 12, 13); settings vary one parameter at a time
    c3 = "peak R >= 2 across K, C, D, L, T"
    lab_settings = [(8, 1, 128, 1, 128), (4, 2, 128, 1, 128)]
    add(
        "03-biod-lab",
        3,
        "lab",
        "Figures 2, 12, 13",
        c3,
        {
            "base": lab_base(probe(), 1000),
            "zip": [_biod_zip(lab_settings)],
            "product": {"dataset.n": [800, 1600], **lab_d(24, 32)},
        },
        cost=_cost("lab", [800, 1600] * 2, 1000, per_doc="probe") + " for the C = 2 setting (the "
        "probe's runs are 01-bios-1000-lab's)",
        notes="The probe and the same 8 value tokens per person as 4 attributes of 2 chunks. "
        "bioD's bound needs R_max >= 2.1 to test R >= 2: the lab's R is about 1.",
    )
    gpu_settings = [(8, 1, 128, 1, 128), (4, 2, 64, 2, 32), (2, 8, 16, 2, 16)]
    add(
        "03-biod-gpu",
        3,
        "gpu",
        "Figures 2, 12, 13",
        c3,
        {
            "base": gpu_base({"kind": "biod", "seed": 0, "vocab": 400}, 1000),
            "zip": [
                _biod_zip(gpu_settings),
            ],
            "product": {"dataset.n": [2000, 8000]},
            "blocks": [{"zip": models(GPU_1000[:4])}],
        },
        cost=_cost("gpu", [2000, 8000] * 3 * 4, 1000, per_doc="probe"),
    )
    paper_settings = [
        (8, 2, 100, 2, 100),
        (1, 2, 100, 2, 100),
        (50, 2, 100, 2, 100),
        (8, 1, 100, 2, 100),
        (8, 10, 100, 2, 100),
        (8, 2, 10, 2, 100),
        (8, 2, 10000, 2, 100),
        (8, 2, 100, 1, 100),
        (8, 2, 100, 8, 100),
        (8, 2, 100, 2, 20),
        (8, 2, 100, 2, 40000),
    ]
    blocks3 = []
    for k, c, d, ell, t in paper_settings:
        per_person = 17 + k * c * math.log2(d)
        for bits in (5e6, 2e7):
            n = int(round(bits / per_person, -3))
            blocks3.append(
                {
                    "name": f"K{k} C{c} D{d} L{ell} T{t} N={n:,}",
                    "set": {
                        "dataset.k": k,
                        "dataset.c": c,
                        "dataset.d": d,
                        "dataset.l": ell,
                        "dataset.t": t,
                        "dataset.n": n,
                    },
                    "product": {"model.preset": _grid_for_bits(bits)},
                }
            )
    add(
        "03-biod-paper",
        3,
        "paper",
        "Figures 2, 12, 13",
        c3,
        {
            "base": paper_base(
                {"kind": "biod", "seed": 0, "vocab": 4096},
                1000,
                weight_decay=0.01,
                lr=5e-4,
                batch_size=192,
            ),
            "blocks": blocks3,
        },
        notes="Parameter 5 (wd 0.01, lr 5e-4, batch 192). The paper's exact bioD grid is not "
        "published: one parameter varies at a time around K=8, C=2, D=100, L=2, T=100, "
        "with N chosen for 5M and 20M bits and models from bits/8 to bits/0.8.",
    )

    # 4 -- bioS, 100 exposures (Figure 1b)
    c4 = "peak R >= 1 (at most 2x below 1000 exposures)"
    add(
        "04-bios-100-lab",
        4,
        "lab",
        "Figure 1(b)",
        c4,
        {
            "base": lab_base(probe(), 100),
            "blocks": width_blocks(LAB_100),
        },
        calibrated=True,
        cost=_cost("lab", [n for ns in LAB_100.values() for n in ns], 100, per_doc="probe"),
        notes=stand_in + "The same models as 01-bios-1000-lab.",
    )
    gpu_n100 = {10_000: 4, 20_000: 8, 50_000: 16}
    add(
        "04-bios-100-gpu",
        4,
        "gpu",
        "Figure 1(b)",
        c4,
        {
            "base": gpu_base(bios("gpu"), 100),
            "zip": [
                n_batches(gpu_n100),
                models(GPU_100),
            ],
        },
        cost=_cost("gpu", list(gpu_n100) * len(GPU_100), 100),
    )
    add(
        "04-bios-100-paper",
        4,
        "paper",
        "Figure 1(b)",
        c4,
        {"base": paper_base(bios("paper"), 100), "blocks": per_n_blocks(P2, paper_grid)},
        notes="Parameter 2 (N = 10K and 20K are not run at 100 exposures).",
    )

    # 5 -- architectures at 1000 exposures (Figure 3)
    c5 = "LLaMA, Mistral, GPT2 with 1/4 MLP or no MLP: about 2, like GPT2"
    archs = {
        "llama": ("llama-2-1", {}),
        "llama-tied": ("llama-2-1", {"tied": True}),
        "mistral": ("mistral-2-2", {}),
        "gpt2-quarter-mlp": ("gpt2-2-1", {"mlp_ratio": 1}),
        "gpt2-no-mlp": ("gpt2-2-1", {"mlp_ratio": 0}),
    }
    add(
        "05-arch-1000-lab",
        5,
        "lab",
        "Figure 3",
        c5,
        {
            "base": lab_base(probe(), 1000),
            "zip": [lab_archs(archs, 16)],
            "product": {"dataset.n": [800, 400]},
        },
        cost=_cost("lab", [800, 400] * 5, 1000, per_doc="probe"),
        notes=stand_in + "The GPT2 baseline is 01-bios-1000-lab's d16 model. One learning rate "
        "(the paper's best-of-3 would triple the cost); Mistral has 2 query heads per "
        "key/value head.",
    )
    gpu_arch_blocks = []
    for name, (p, o) in archs.items():
        shapes = ["2-1", "4-1", "2-2"] if not name.startswith("mistral") else ["2-2", "4-2"]
        fam = p.split("-")[0]
        block = {
            "name": name,
            "set": {"model.overrides": o},
            "product": {"model.preset": [f"{fam}-{s}" for s in shapes]},
        }
        if fam in ("llama", "mistral"):
            block["product"]["training.lr"] = [5e-4, 1e-3, 2e-3]
        gpu_arch_blocks.append(block)
    add(
        "05-arch-1000-gpu",
        5,
        "gpu",
        "Figure 3",
        c5,
        {
            "base": gpu_base(bios("gpu"), 1000),
            "zip": [n_batches(gpu_n)],
            "blocks": gpu_arch_blocks,
        },
        notes="Best of 3 learning rates for LLaMA/Mistral (Parameter 6).",
    )
    blocks5 = []
    for name, (p, o) in archs.items():
        fam = p.split("-")[0]
        for n, (wd, lr, batch) in ((n, r[:3]) for n, r in P1.items() if n <= M):
            lrs = P6_LR[n] if fam in ("llama", "mistral") else [lr]
            blocks5.append(
                {
                    "name": f"{name} N={n:,}",
                    "set": {
                        "dataset.n": n,
                        "training.weight_decay": wd,
                        "training.batch_size": batch,
                        "model.overrides": o,
                    },
                    "product": {
                        "model.preset": [s.replace("gpt2", fam) for s in paper_grid(n)[::2]],
                        "training.lr": lrs,
                    },
                }
            )
    add(
        "05-arch-1000-paper",
        5,
        "paper",
        "Figure 3",
        c5,
        {"base": paper_base(bios("paper"), 1000), "blocks": blocks5},
        notes="Parameter 6 (LLaMA/Mistral: best of 3 LRs); GPT2_1/4 and GPT2_0 use Parameter "
        "1. Every other shape of the GPT2 grid, to halve the cost.",
    )

    # 6 -- architectures at 100 exposures (Figure 4)
    c6 = "LLaMA/Mistral up to 1.3x worse; no MLP > 1.5x worse; 1/4 MLP fine"
    archs6 = {k: v for k, v in archs.items() if k != "llama-tied"}
    add(
        "06-arch-100-lab",
        6,
        "lab",
        "Figure 4",
        c6,
        {
            "base": lab_base(probe(), 100),
            "zip": [lab_archs(archs6, 32)],
            "product": {"dataset.n": LAB_100_N},
        },
        calibrated=True,
        cost=_cost("lab", LAB_100_N * 4, 100, per_doc="probe"),
        notes=stand_in + "The GPT2 baseline is 04-bios-100-lab's d32 model.",
    )
    gpu6 = []
    for name, (p, o) in archs6.items():
        fam = p.split("-")[0]
        shapes = ["2-2", "4-2", "8-2"]
        lrs = [5e-4, 1e-3] if name == "gpt2-quarter-mlp" else [3e-4, 5e-4, 1e-3]
        gpu6.append(
            {
                "name": name,
                "set": {"model.overrides": o},
                "product": {"model.preset": [f"{fam}-{s}" for s in shapes], "training.lr": lrs},
            }
        )
    add(
        "06-arch-100-gpu",
        6,
        "gpu",
        "Figure 4",
        c6,
        {
            "base": gpu_base(bios("gpu"), 100),
            "zip": [n_batches(gpu_n100)],
            "blocks": gpu6,
        },
        notes="Parameter 7's learning-rate options.",
    )
    blocks6 = []
    for name, (p, o) in archs6.items():
        fam = p.split("-")[0]
        table = P7B if name == "gpt2-quarter-mlp" else P7A
        for n, lrs in table.items():
            blocks6.append(
                {
                    "name": f"{name} N={n:,}",
                    "set": {
                        "dataset.n": n,
                        "training.weight_decay": 0.01,
                        "training.batch_size": P2[n][2],
                        "model.overrides": o,
                    },
                    "product": {
                        "model.preset": [s.replace("gpt2", fam) for s in paper_grid(n)[::2]],
                        "training.lr": lrs,
                    },
                }
            )
    add(
        "06-arch-100-paper",
        6,
        "paper",
        "Figure 4",
        c6,
        {"base": paper_base(bios("paper"), 100), "blocks": blocks6},
        notes="Parameter 7 (a) and (b), N = 50K-1M; every other shape of the GPT2 grid.",
    )

    # 7 -- the LLaMA -> GPT2 path (Figure 5), configs/ablations/
    c7 = "LLaMA with a standard MLP recovers GPT2's ratio (100 exposures)"
    abl = [f"@../ablations/{a}.yaml" for a in ABLATIONS[1:]]
    add(
        "07-llama-to-gpt2-lab",
        7,
        "lab",
        "Figure 5",
        c7,
        {
            "base": lab_base(probe(), 100),
            "product": {"model": abl, "dataset.n": LAB_100_N},
            "set": {
                "model.preset": "llama-2-2",
                "model.overrides.d_model": 32,
                "model.overrides.n_head": 2,
            },
        },
        calibrated=True,
        cost=_cost("lab", LAB_100_N * 4, 100, per_doc="probe"),
        notes=stand_in + "Steps 2-5 of configs/ablations/; step 1 (LLaMA) and GPT2 are "
        "06-arch-100-lab and 04-bios-100-lab.",
    )
    add(
        "07-llama-to-gpt2-gpu",
        7,
        "gpu",
        "Figure 5",
        c7,
        {
            "base": gpu_base(bios("gpu"), 100),
            "zip": [n_batches(gpu_n100)],
            "product": {
                "model": [f"@../ablations/{a}.yaml" for a in ABLATIONS],
                "model.preset": ["llama-2-2", "llama-4-2"],
                "training.lr": [3e-4, 5e-4, 1e-3],
            },
        },
    )
    blocks7 = [
        {
            "name": f"N={n:,}",
            "set": {"dataset.n": n, "training.weight_decay": 0.01, "training.batch_size": P2[n][2]},
            "product": {
                "model": [f"@../ablations/{a}.yaml" for a in ABLATIONS],
                "model.preset": [s.replace("gpt2", "llama") for s in paper_grid(n)[::3]],
                "training.lr": lrs,
            },
        }
        for n, lrs in P7A.items()
    ]
    add(
        "07-llama-to-gpt2-paper",
        7,
        "paper",
        "Figure 5",
        c7,
        {"base": paper_base(bios("paper"), 100), "blocks": blocks7},
        notes="Parameter 8: best of Parameter 7(a)'s three LRs for every step; every third "
        "shape of the grid.",
    )

    # 8 -- quantization (Figures 6, 14, 15): the models of result 1, then `kcap quantize`
    c8 = "int8 keeps capacity; int4 loses more than 2x"
    q_note = (
        "Trains (or reuses: identical configs share runs) the result-1 models nearest "
        "the capacity boundary; then quantizes each finished run (GPTQ, weight-only): "
        "`kcap quantize --grid THIS_FILE --out SWEEP_DIR --bits 8`, then `--bits 4`."
    )
    add(
        "08-quantization-lab",
        8,
        "lab",
        "Figures 6, 14, 15",
        c8,
        {
            "base": lab_base(probe(), 1000),
            "product": {"dataset.n": [1600, 800], **lab_d(24, 32)},
        },
        calibrated=True,
        cost="0 if 01-bios-1000-lab has run (shared runs)",
        notes=q_note,
    )
    add(
        "08-quantization-gpu",
        8,
        "gpu",
        "Figures 6, 14, 15",
        c8,
        {
            "base": gpu_base(bios("gpu"), 1000),
            "zip": [
                {"dataset.n": [2000, 5000], "training.batch_size": [8, 16]},
                models(GPU_1000[1:3]),
            ],
        },
        cost="0 if 01-bios-1000-gpu has run (shared runs)",
        notes=q_note,
    )
    add(
        "08-quantization-paper",
        8,
        "paper",
        "Figures 6, 14, 15",
        c8,
        {
            "base": paper_base(bios("paper"), 1000),
            "blocks": per_n_blocks(
                {n: r for n, r in P1.items() if n in (100 * K, 1 * M)},
                lambda n: paper_grid(n, lo=11, hi=60),
            ),
        },
        notes=q_note,
    )

    # 9 -- mixture of experts (Figures 7, 16, 17)
    c9 = "MoE-32: only 1.3x (1000 exp.) / 1.5x (100 exp.) below dense, per total parameter"
    add(
        "09-moe-lab",
        9,
        "lab",
        "Figures 7, 16, 17",
        c9,
        {
            "base": lab_base(probe(), 100),
            "set": {"model.preset": "gpt2-2-2-moe32"},
            "product": {"dataset.n": [1600, 800]},
        },
        calibrated=True,
        cost=_cost("lab", [1600, 800], 100, per_doc="probe", rate=MOE_LAB_RATE),
        notes=stand_in + "100 exposures only: at 1000 exposures the 32-expert model (P about "
        "171k at d32) needs N of 3,200 and more, hours on this CPU. The dense baseline is "
        "04-bios-100-lab. d16 (P about 50k) stored nothing at 100 exposures (measured), like "
        "the dense d16.",
    )
    add(
        "09-moe-gpu",
        9,
        "gpu",
        "Figures 7, 16, 17",
        c9,
        {
            "base": gpu_base(bios("gpu"), 1000),
            "blocks": [
                {
                    "name": "1000 exposures",
                    "zip": [n_batches(gpu_n)],
                    "product": {
                        "model.preset": ["gpt2-2-1-moe32", "gpt2-2-2-moe32"],
                        "training.lr": [1e-3, 2e-3],
                    },
                },
                {
                    "name": "100 exposures",
                    "set": {"training.exposures": 100, "training.weight_decay": 0.01},
                    "zip": [n_batches(gpu_n100)],
                    "product": {
                        "model.preset": ["gpt2-2-1-moe32", "gpt2-2-2-moe32"],
                        "training.lr": [1e-3, 2e-3, 5e-3],
                    },
                },
            ],
        },
    )
    moe_grid = lambda n: paper_grid(n, moe=True)[::2]  # noqa: E731
    b9 = [
        {**b, "name": f"1000 exp. {b['name']}"}
        for b in per_n_blocks({n: r[:3] for n, r in P1.items() if n <= M}, moe_grid)
    ]
    for b, n in zip(b9, [n for n in P1 if n <= M], strict=True):
        b["set"].pop("training.lr", None)
        b["product"]["training.lr"] = P9_1000[n]
    b9 += [
        {**b, "name": f"100 exp. {b['name']}"}
        for b in per_n_blocks(P9_100, moe_grid, extra_set={"training.exposures": 100})
    ]
    add(
        "09-moe-paper",
        9,
        "paper",
        "Figures 7, 16, 17",
        c9,
        {"base": paper_base(bios("paper"), 1000), "blocks": b9},
        notes="Parameter 9 (top-1, capacity factor 2 in training, none in evaluation: the "
        "preset's defaults). Every other MoE shape.",
    )

    # 10-12 -- junk mixtures (Figure 8)
    for num, stem, kind, domain, panels, claim, figure in (
        (
            10,
            "10-random-junk",
            "random",
            "none",
            [100, 300, 600, 1000],
            "7:1 random junk: 20x lower at 100 exposures; 3x/1.5x/1.3x at 300/600/1000",
            "Figure 8(a)-(e)",
        ),
        (
            11,
            "11-repetitive-junk",
            "repetitive",
            "none",
            [100],
            "7:1 repetitive junk: no effect",
            "Figure 8(f)",
        ),
        (
            12,
            "12-domain-token",
            "random",
            "useful",
            [100, 300],
            "a domain token: 2x at 100 exposures, none at 300",
            "Figure 8(g), 8(h)",
        ),
    ):
        needs = ["dataset.kind=junk"] + (["dataset.domain"] if domain != "none" else [])
        ds = lambda scale: junk(scale, kind, domain)  # noqa: B023, E731
        lab_panels = [e for e in panels if e <= 300]
        lab_ns = {100: LAB_100_N, 300: [400]}
        add(
            f"{stem}-lab",
            num,
            "lab",
            figure,
            claim,
            {
                "needs": [*needs, "dataset.useful"],
                "base": lab_base(ds("lab"), 100),
                "blocks": [
                    {
                        "name": f"{e} exposures",
                        "set": {
                            "training.exposures": e,
                            "training.batch_size": training("lab", e)["batch_size"],
                            "measurement.every": measurement("lab", e)["every"],
                        },
                        "product": {"dataset.n": lab_ns[e]},
                    }
                    for e in lab_panels
                ],
            },
            calibrated=True,
            cost="; ".join(_cost("lab", lab_ns[e], e, per_doc="probe-junk") for e in lab_panels),
            notes=stand_in + "Useful bioD probe people, bioD junk. The no-junk reference is "
            "04-bios-100-lab's law (d32 here). 600/1000 exposures run at gpu and paper scale only.",
        )
        gpu_ns = {100: [5000, 10000, 20000], 300: [5000, 10000], 600: [5000], 1000: [2000, 5000]}
        add(
            f"{stem}-gpu",
            num,
            "gpu",
            figure,
            claim,
            {
                "needs": needs,
                "base": gpu_base(ds("gpu"), 100, batch_size=16),
                "product": {
                    "model.preset": ["gpt2-2-2", "gpt2-4-2"],
                    "training.lr": [3e-4, 5e-4, 1e-3],
                },
                "blocks": [
                    {
                        "name": f"{e} exposures",
                        "set": {"training.exposures": e},
                        "product": {"dataset.n": gpu_ns[e]},
                    }
                    for e in panels
                ],
            },
            notes="The no-junk reference is 04-bios-100-gpu.",
        )
        key = "domain" if domain != "none" else kind
        blocks = []
        for e in panels:
            for b in per_n_blocks(
                P10[(key, e)], lambda n: paper_grid(n)[::3], extra_set={"training.exposures": e}
            ):
                blocks.append({**b, "name": f"{e} exp. {b['name']}"})
        add(
            f"{stem}-paper",
            num,
            "paper",
            figure,
            claim,
            {"needs": needs, "base": paper_base(ds("paper"), 100), "blocks": blocks},
            notes="Parameter 10; every third shape of the grid.",
        )
    return out


def _biod_zip(settings) -> dict:
    return {f"dataset.{key}": [s[i] for s in settings] for i, key in enumerate("kcdlt")}


def _grid_for_bits(bits: float) -> list[str]:
    """Paper GPT2 shapes with P between bits/8 and bits/0.8 (the capacity boundary inside)."""
    cands = sorted((paper_p(ell, h), ell, h) for ell in _LAYERS for h in _HEADS)
    kept, last = [], 0.0
    for p, ell, h in cands:
        if bits / 8 <= p <= bits / 0.8 and p >= last * 1.4:
            kept.append(f"gpt2-{ell}-{h}")
            last = p
    return kept


def _cost(
    scale: str,
    ns: list[int],
    exposures: int,
    *,
    per_doc: int | str = "bios",
    rate: int | None = None,
) -> str:
    """Training tokens and minutes; ``per_doc`` is tokens per person (a TOKENS_PER_DOC key, with
    "-junk" for a 7:1 junk mixture's 8 tokens per useful one)."""
    if isinstance(per_doc, str):
        base, junk = per_doc.removesuffix("-junk"), per_doc.endswith("-junk")
        per_doc = TOKENS_PER_DOC[base] * (8 if junk else 1)
    tokens = sum(ns) * exposures * per_doc
    seconds = tokens / (rate or THROUGHPUT[scale])
    return f"{tokens / 1e6:,.0f}M tokens, about {seconds / 60:,.0f} min"


# --------------------------------------------------------------------------- writing


def render(stem: str, spec: dict) -> str:
    m = spec["meta"]
    if m["calibrated"]:
        status = "calibrated by measurement: run end to end on this CPU (README.md, results/lab/)"
    elif m["scale"] == "lab":
        status = "the measured lab settings (configs/README.md); this grid not yet run end to end"
    else:
        status = "scaled estimate (not yet run end to end; see configs/README.md)"
    head = [
        f"# Result {m['result']} ({m['figure']}), {m['scale']} scale: {m['claim']}.",
        f"# Scale: {SCALES[m['scale']]}.",
        f"# Calibration: {status}.",
    ]
    if m["cost"]:
        head.append(f"# Estimated cost: {m['cost']}.")
    if m["notes"]:
        head += [f"# {line}" for line in _wrap(m["notes"])]
    head.append(f"# Run: kcap sweep configs/recipes/{stem}.yaml --workers K; then kcap report.")
    head.append("# Generated by configs/recipes/make_recipes.py: edit that file, not this one.")
    body = yaml.safe_dump(spec["grid"], sort_keys=False, width=100, default_flow_style=None)
    return "\n".join(head) + "\n" + body


def _wrap(text: str, width: int = 96) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return [*lines, line] if line else lines


def main(check: bool = False) -> int:
    stale = []
    for stem, spec in recipes().items():
        path = HERE / f"{stem}.yaml"
        text = render(stem, spec)
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print("out of date:", ", ".join(stale))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv))
