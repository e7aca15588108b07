"""`kcap demo`: the embedded default study, a capacity law in minutes on a 2-core CPU.

Three GPT2-2-2 models (d = 8, 16, 32: about 2.8k, 8.7k and 29.6k counted parameters) each
meet two sets of random strings (Morris et al. 2025, SPEC §2: 64 symbols over 128, 448 bits a
string), the larger twice the smaller, both holding more bits than the model can store (1.5 to
13 times what they stored), for 1000 exposures. Bits that
stop rising as the set doubles are the model's capacity; bits against P across the three are
the law, read by the report's analysis (`kcap.experiments.analysis`), as for every study.

Why random strings and not bioS or the bioD probe: tiny models learn bioS's shared text and the
probe's names too slowly to reach their capacity in minutes (configs/README.md, calibration
steps 1 and 8: three d-8 probe models over-filled at 1000 exposures take 5 minutes of one core
and still rise). A random string has nothing to learn but itself, so a model fills in seconds.

The calibration (configs/README.md, calibration step 10), made once on d 16 with 200 strings
and applied unchanged to every width: learning rate 2e-2 (3e-3, the lab's, stored 18% less;
2e-2 to 5e-2 agree within 2%), no weight decay, batches of 16 strings (1,040 tokens a step).
Each model's sets over-fill it even at Morris et al.'s 3.6 bits per parameter; d 8's are the
larger pair (120 and 240) because it fills slowly: its bits still rose 3-13% from 60 to 120.
"""

from __future__ import annotations

from collections.abc import Iterable

from kcap.experiments.analysis import Law, analyse, load_points
from kcap.experiments.grid import GridPoint, expand, parse_grid

#: the demo's grid (a `kcap sweep` grid file's mapping); ``--set`` overrides its base
DEMO_GRID: dict = {
    "name": "demo",
    "description": "three tiny GPT2s, each over-filled with random strings: a capacity law",
    "scale": "lab",
    "base": {
        "dataset": {"kind": "random", "s": 64, "v": 128, "seed": 0},
        "model": {"preset": "gpt2-2-2", "overrides": {"n_head": 2}},
        "training": {
            "exposures": 1000,
            "batch_size": 16,
            "window": 65,  # one string and its <|eos|> per row
            "lr": 2e-2,
            "weight_decay": 0.0,
            "checkpoint_every": 5000,
            "log_every": 50,
        },
        "measurement": {"every": 2000, "during_max_people": 100, "batch_size": 100},
    },
    # the largest first: the two workers start on the longest runs
    "blocks": [
        {"set": {"model.overrides.d_model": 32}, "product": {"dataset.m": [600, 300]}},
        {"set": {"model.overrides.d_model": 16}, "product": {"dataset.m": [200, 100]}},
        {"set": {"model.overrides.d_model": 8}, "product": {"dataset.m": [240, 120]}},
    ],
}


def demo_points(overrides: Iterable[str] = ()) -> list[GridPoint]:
    """The demo's runs, ``key=value`` overrides applied to the grid's base (as `kcap sweep
    --set`): a block's own settings (the width, the number of strings) win over them."""
    return expand(parse_grid(DEMO_GRID, overrides=list(overrides)))


def demo_law(db) -> Law | None:
    """The random-strings law of the runs in the demo's store (None before any finished)."""
    laws = [law for law in analyse(load_points(db)) if law.family == "random-strings"]
    return max(laws, key=lambda law: len(law.points), default=None)
