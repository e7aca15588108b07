"""A dataset on disk, loaded: the `Dataset` class, the registry of dataset families by kind, and
`load_dataset`.

``DIR/manifest.json`` says what the dataset is (kind, parameters, seed, exact bits by component,
vocabulary statistics); ``DIR/population.npz`` holds the sampled people (random strings: the
sequences) and ``DIR/tokenizer.json`` the tokenizer trained on it (`kcap.data.build` writes
them). Template documents are never stored: they are re-rendered, on the fly and
deterministically, for every exposure. Two kinds add a file: a repetitive junk mixture its junk
people (``junk_population.npz``), bioR its LM-written texts (``rewrites.npz``).

Each kind is a family, one module of `kcap.data` that ends with a `kcap.data.family.Family`:
bios (`kcap.data.bios`), biod (`kcap.data.biod`), junk (`kcap.data.junk`), bior
(`kcap.data.bior`), random (`kcap.data.random_strings`). ``register`` adds another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kcap.data.biod import FAMILY as BIOD
from kcap.data.bior import FAMILY as BIOR
from kcap.data.bios import FAMILY as BIOS
from kcap.data.build import MANIFEST, TOKENIZER
from kcap.data.family import MEASURE_KINDS, DocumentSource, Family
from kcap.data.junk import FAMILY as JUNK
from kcap.data.random_strings import FAMILY as RANDOM
from kcap.errors import require
from kcap.tokenization.tokenizer import KTokenizer

DEFAULT_EVAL_SEED = 12345

#: The dataset families by kind: what a manifest's ``kind`` names.
FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make ``family`` known by its kind (refused when another family has the kind)."""
    taken = FAMILIES.get(family.kind)
    require(taken is None or taken is family, "kind", f"{family.kind!r} is another family's kind")
    FAMILIES[family.kind] = family
    return family


for _family in (BIOS, BIOD, JUNK, BIOR, RANDOM):
    register(_family)


def family(kind: str) -> Family:
    """The family of datasets of this kind."""
    kinds = ", ".join(FAMILIES)
    require(kind in FAMILIES, "kind", f"unknown dataset kind {kind!r} (known: {kinds})")
    return FAMILIES[kind]


@dataclass
class Dataset:
    """A loaded dataset directory.

    ``population`` holds what the measurement scores: bioS/bioR/junk the (useful) people, bioD
    its population, random strings the sequences. ``extras`` holds the further files its family
    stores, by file name: a repetitive junk mixture's junk people (`kcap.data.junk.JUNK_POPULATION`,
    bioS or bioD like its useful people), bioR's rewrites (`kcap.data.bior.REWRITES`).
    """

    path: Path
    manifest: dict
    population: Any
    tokenizer: KTokenizer
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def family(self) -> Family:
        return family(self.kind)

    @property
    def measure_kind(self) -> str:
        """Which measurement applies: "bios", "biod" or "random" (the bioS bound for bioS and
        bioR; the bioD bound; memorised random bits; a junk mixture its useful data's)."""
        return self.family.measure_kind(self.manifest)

    @property
    def n(self) -> int:
        return self.population.n

    def source(self, *, eval_: bool = False, eval_seed: int = DEFAULT_EVAL_SEED) -> DocumentSource:
        """The document source for training (keyed by the dataset seed) or evaluation (keyed by
        ``eval_seed``, as its family decides): for a junk mixture the useful people, for bioR
        the stored rewrites (evaluation: each person's held-out rewrite)."""
        return self.family.source(self, eval_=eval_, eval_seed=eval_seed)

    @property
    def bits(self) -> dict[str, float]:
        return self.manifest["bits"]


def load_dataset(path: str | Path) -> Dataset:
    """Read a dataset directory written by `kcap.data.build.write_dataset`."""
    path = Path(path)
    manifest_path = path / MANIFEST
    require(manifest_path.is_file(), "dataset", f"no dataset at {path} (missing {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    kind = manifest.get("kind")
    require(kind in FAMILIES, "dataset", f"{path}: unknown dataset kind {kind!r}")
    fam = FAMILIES[kind]
    measured = fam.measure_kind(manifest)
    require(measured in MEASURE_KINDS, "dataset", f"{path}: unknown measure kind {measured!r}")
    tok = KTokenizer.load(path / TOKENIZER)
    population, extras = fam.load(path, manifest)
    return Dataset(path, manifest, population, tok, extras)


__all__ = ["DEFAULT_EVAL_SEED", "FAMILIES", "Dataset", "family", "load_dataset", "register"]
