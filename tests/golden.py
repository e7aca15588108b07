"""Golden fingerprints: what every dataset family produces, pinned before code moves.

For each family (bioS in its three variants, bioD, junk mixtures over bioS and bioD, bioR, random
strings) a small dataset is built and fingerprinted: the manifest, every stored array and the
tokenizer (dataset bytes), the first training windows (the stream), and the measurement of a
fixed untrained model (the measure). The run ids of every recipe are pinned too. A refactor that
changes none of these changes no result; `tests/test_golden.py` compares against
``tests/golden.json``, which ``python -m tests.golden`` rewrites (only when a change of behaviour
is intended, and said so in the commit).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from kcap.data.biod import BioDParams, build_biod
from kcap.data.bior import build_bior
from kcap.data.bios import build_bios
from kcap.data.build import write_dataset
from kcap.data.dataset import load_dataset
from kcap.data.junk import build_junk
from kcap.data.random_strings import build_random
from kcap.experiments.grid import expand, load_grid
from kcap.measure import measure
from kcap.models.config import preset
from kcap.models.gpt import GPT
from kcap.tokenization.factory import make_stream

GOLDEN = Path(__file__).with_name("golden.json")
RECIPES = Path(__file__).parents[1] / "configs" / "recipes"


class TemplateRewriter:
    """A deterministic stand-in LM for bioR: one fixed paraphrase per prompt, varied by seed."""

    def __init__(self, people):
        self.people = people
        self.by_name = {people.full_name(i): i for i in range(people.n)}

    def __call__(self, prompts, seed):
        out = []
        for k, prompt in enumerate(prompts):
            i = self.by_name[prompt.opening]
            v = self.people.values(i)
            pron = "She" if self.people.gender[i] else "He"
            out.append(
                f" was born on {v[0]} in {v[1]}. {pron} read {v[3]} at {v[2]} ({seed % 7}, {k}). "
                f"{pron} joined {v[4]}, based in {v[5]}."
            )
        return out


def _builds() -> dict[str, tuple]:
    from kcap.data.bios import BioSPopulation

    return {
        "bios-online": build_bios(30, seed=1, vocab=500),
        "bios-simple": build_bios(30, seed=1, variant="simple", vocab=500),
        "bios-fullname": build_bios(30, seed=1, variant="fullname", vocab=500),
        "bios-word": build_bios(20, seed=2, vocab=500, tokenizer="word"),
        "biod": build_biod(BioDParams(24, 3, 2, 16, 2, 10), seed=3, vocab=400),
        "junk-random-domain": build_junk(20, 3, "random", seed=4, domain="useful", vocab=500),
        "junk-repetitive": build_junk(
            20, 1, "repetitive", seed=4, domain="junk", junk_n=8, vocab=500
        ),
        "junk-biod": build_junk(
            20, 1, "random", seed=5, vocab=400, useful="biod", k=3, c=2, d=16, l=2, t=10
        ),
        "bior": build_bior(
            6, None, 7, rewrites=2, max_tries=3, vocab=500,
            rewriter=TemplateRewriter(BioSPopulation.sample(6, 7)),
        ),
        "random": build_random(16, 8, 16, seed=6),
    }  # fmt: skip


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _files(path: Path) -> dict[str, str]:
    """Dataset bytes: the manifest (canonical JSON), each array of each .npz, other files."""
    out = {}
    for f in sorted(path.iterdir()):
        if f.suffix == ".npz":
            with np.load(f) as z:
                for key in sorted(z.files):
                    a = z[key]
                    out[f"{f.name}:{key}"] = _digest(f"{a.dtype}{a.shape}".encode() + a.tobytes())
        elif f.name == "manifest.json":
            out[f.name] = _digest(json.dumps(json.loads(f.read_text()), sort_keys=True).encode())
        else:
            out[f.name] = _digest(f.read_bytes())
    return out


def _stream(ds) -> str:
    """The first 12 windows of a 3-exposure stream, ids, people, labels and source."""
    stream = make_stream(ds, exposures=3, seed=ds.manifest["seed"], window=32)
    h = hashlib.sha256()
    for _ in range(12):
        w = next(stream)
        for a in (w.ids, w.people, w.labels, np.array([w.source])):
            h.update(np.asarray(a, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _measurement(ds) -> dict[str, float]:
    """p1, p2 (p3) and the unclipped terms of an untrained GPT of seed 0."""
    torch.manual_seed(0)
    model = GPT(preset("gpt2-1-2", ds.tokenizer.vocab_size, d_model=32))
    m = measure(model, ds, P_count=1000, batch_size=8)
    out = {"p1": m.p1, "p2": m.p2, **{f"bits_{k}": v for k, v in m.bits_unclipped.items()}}
    if m.p3 is not None:
        out["p3"] = m.p3
    return {k: round(float(v), 4) for k, v in out.items()}  # compared with a tolerance


def run_ids() -> str:
    """Every run id of every recipe, sorted and hashed."""
    ids = sorted(r.run_id for f in sorted(RECIPES.glob("*.yaml")) for r in expand(load_grid(f)))
    return _digest("\n".join(ids).encode())


def fingerprints(root: Path) -> dict:
    torch.set_num_threads(1)
    out: dict = {"recipes": run_ids()}
    for name, built in _builds().items():
        path = root / name
        write_dataset(path, *built, force=False)
        ds = load_dataset(path)
        out[name] = {"files": _files(path), "stream": _stream(ds), "measure": _measurement(ds)}
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.write_text(json.dumps(fingerprints(Path(tmp)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)
