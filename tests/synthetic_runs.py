"""Synthetic finished runs with a known capacity law, written into a results store (test helper).

Each model stores min(0.97 · the data's bits, R · P · noise) bits: data-limited when the dataset
is small, at capacity (R bits per parameter) when it is large. `late_onset` is the opposite: a
learner with no capacity limit that is slow to start memorising. A run can also be a `kcap
quantize` measurement (``quantize``: the config's entry) or a junk mixture (``junk``: random or
repetitive, on bioD useful data; ``domain``: the domain-token option).
"""

from __future__ import annotations

import math

import numpy as np

from kcap.data.biod import biod_bits
from kcap.data.bios import bios_bits
from kcap.experiments.store import ResultsStore
from kcap.training.config import config_hash

SIZES = (20_000, 40_000, 80_000, 160_000)
NS = (200, 400, 800, 1600, 3200, 6400)


def record(
    store: ResultsStore,
    *,
    n: int,
    P: int,
    R: float,
    exposures: int = 1000,
    preset: str = "gpt2-2-1",
    overrides: dict | None = None,
    variant: str = "online",
    seed: int = 0,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
    biod: tuple[int, int, int, int, int] | None = None,
    lr: float = 1e-3,
    history: bool | list[tuple[int, float]] = True,
    quantize: dict | None = None,
    junk: str | None = None,
    domain: str | None = None,
    non_embedding: int | None = None,
) -> str:
    if junk is not None:
        k, c, d, length, t = biod
        dataset = {"kind": "junk", "useful": "biod", "junk": junk, "ratio": 7, "domain": domain}
        dataset |= {"n": n, "seed": 0, "k": k, "c": c, "d": d, "l": length, "t": t}
        data = biod_bits(n, k, c, d, length, t)
        params = {"n": n, "k": k, "c": c, "d": d, "l": length, "t": t, "ratio": 7}
    elif biod is None:
        dataset = {"kind": "bios", "n": n, "seed": 0, "variant": variant}
        data = bios_bits(n)
        params = {"n": n, "variant": variant}
    else:
        k, c, d, length, t = biod
        dataset = {"kind": "biod", "n": n, "seed": 0, "k": k, "c": c, "d": d, "l": length, "t": t}
        data = biod_bits(n, k, c, d, length, t)
        params = {"n": n, "k": k, "c": c, "d": d, "l": length, "t": t}
    factor = 1.0 + (rng.normal(0, noise) if rng is not None and noise else 0.0)
    bits = min(0.97 * data["total"], R * P * factor)
    share = bits / data["total"]
    components = {k: data[k] * share for k in ("name", "value", "diversity")}
    components["total"] = bits
    config = {
        "name": f"syn-{dataset['kind']}-{n}-{preset}-{P}-{exposures}-{seed}-{lr}",
        "dataset": dataset,
        "model": {"preset": preset, "overrides": {"d_model": P // 1000, **(overrides or {})}},
        "training": {"exposures": exposures, "seed": seed, "lr": lr},
    }
    if quantize is not None:
        config["quantize"] = quantize
        config["name"] += "-" + "-".join(f"{k}={v}" for k, v in sorted(quantize.items()))
    run_id = config_hash(config)
    metrics = {
        "kind": dataset["kind"],
        "n_people": n,
        "bits": components,
        "data_bits": data["total"],
        "P": P,
        "R": bits / P,
        "R_max": data["total"] / P,
        "recall_accuracy": min(1.0, share),
        "history": [
            {"step": s, "bits": bits * share, "recall_accuracy": 0.5}
            for s, share in (
                history
                if isinstance(history, list)
                else [(s, 1 - math.exp(-3 * s / 100)) for s in (10, 30, 60, 100)]
                if history
                else []
            )
        ],
    }
    manifest = {"kind": dataset["kind"], "params": params, "bits": data}
    store.start_run(
        run_id,
        name=config["name"],
        config=config,
        manifest=manifest,
        run_dir=None,
        params={"P": P} | ({"non_embedding": non_embedding} if non_embedding else {}),
    )
    store.finish_run(run_id, metrics=metrics, timings={"wall_s": 1.0})
    return run_id


def late_onset_share(n: int, exposures: int, *, onset: float = 58.0, n_ref: int = 1600) -> float:
    """The share of a dataset a late-onset learner stores (`late_onset`)."""
    return max(0.0, 1.0 - onset * (n / n_ref) ** 0.32 / exposures)


def late_onset(store: ResultsStore, *, ns=(1600, 3200, 6400), P: int = 50_000, **kw) -> list[str]:
    """A model bounded by how fast it learns, never by what it can hold (no R, no cap).

    Memorisation of a person begins only after e0(N) = 58 (N / 1,600)^0.32 of the run's
    exposures, later on larger data (measured at lab scale: a d=32 GPT2 at 100 exposures began at
    exposure 34, 39 and 62 on N = 1,600, 3,200 and 6,400), and the model stores the share of the
    data it had left after onset. Its bits rise and then fall with N, which a rule reading
    "capacity" off any fall would take for a plateau.
    """
    biod = kw.pop("biod", (8, 1, 128, 1, 128))
    exposures = kw.pop("exposures", 100)
    ids = []
    for n in ns:
        total = biod_bits(n, *biod)["total"]
        share = late_onset_share(n, exposures)
        # R as `record` wants it: bits = R * P, far below the data (no noise, no 0.97 cap)
        R = share * total / P
        # measured every tenth of the run: nothing before the onset, then a steady rise
        e0 = exposures * (1 - share)
        history = [(s, max(0.0, (s / 100 * exposures - e0) / (exposures - e0))) for s in LADDER]
        ids.append(
            record(store, n=n, P=P, R=R, biod=biod, exposures=exposures, history=history, **kw)
        )
    return ids


LADDER = tuple(range(10, 101, 10))  # in-training measurement steps of `late_onset`, end at 100


def law_grid(store: ResultsStore, R: float, *, seeds=(0,), noise=0.03, **kw) -> None:
    """Every size x every N, for each seed."""
    rng = np.random.default_rng(1)
    for seed in seeds:
        for P in SIZES:
            for n in NS:
                record(store, n=n, P=P, R=R, seed=seed, noise=noise, rng=rng, **kw)


def full_store(path) -> None:
    """A store touching every figure: bioS laws at 1000/100, other architectures, bioD."""
    with ResultsStore(path) as store:
        law_grid(store, 2.1, seeds=(0, 1))
        law_grid(store, 1.1, exposures=100)
        law_grid(store, 0.9, exposures=100, preset="llama-2-1")
        law_grid(store, 0.6, exposures=100, overrides={"mlp_ratio": 0})
        law_grid(store, 2.0, variant="simple", history=False)
        for P in SIZES[:2]:
            for n in (500, 2000):
                record(store, n=n, P=P, R=2.2, biod=(4, 2, 64, 2, 32))
