"""`kcap demo`: the embedded default study, calibrated to finish in minutes on a 2-core CPU.

It generates a small bioS population, trains a small GPT2-style model on it for enough
exposures and small-batch steps to memorise most of it, measures the bits stored and writes a
report. The calibration (SPEC §8: small models need many small steps and a few hundred
exposures) is recorded in README.md.
"""

from __future__ import annotations

DEMO_CONFIG: dict = {
    "name": "demo",
    # 150 people: 10,142 bits of knowledge (names 2,930 + attributes 7,139)
    "dataset": {"kind": "bios", "n": 150, "seed": 0, "variant": "online", "vocab": 1024},
    # a 2-layer, d = 64 GPT2 (147k counted parameters): ~45k tokens/s on 2 CPU cores
    "model": {"preset": "gpt2-2-2", "overrides": {"d_model": 64, "n_head": 2}},
    "training": {
        # 800 exposures in ~22k small steps (4 x 128 tokens): memorisation needs both
        "exposures": 800,
        "batch_size": 4,
        "window": 128,
        "lr": 3e-3,
        "weight_decay": 0.1,
        "checkpoint_every": 2000,
        "log_every": 20,
    },
    "measurement": {"every": 2000, "during_max_people": 150, "batch_size": 150},
}
