"""What every family's builder shares: the files of a dataset, tokenizer texts and checks, the
manifest, used tokens, and the atomic write of a built dataset (`write_dataset`).

A builder (``build_bios``, ``build_biod``, ``build_junk``, ``build_bior``, ``build_random``)
returns ``(manifest, population, tokenizer[, extras])`` and writes nothing; `write_dataset`
stores that tuple as ``DIR/manifest.json``, ``DIR/population.npz``, ``DIR/tokenizer.json`` and
one file per extra, and `kcap.data.dataset.load_dataset` reads it back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from kcap.atomic import require_writable, staged_dir
from kcap.data import pools as P
from kcap.data.documents import Document
from kcap.data.templates import PRONOUN_FORMS
from kcap.errors import require
from kcap.tokenization.tokenizer import KINDS, KTokenizer

MANIFEST, POPULATION, TOKENIZER = "manifest.json", "population.npz", "tokenizer.json"
TOKENIZER_SAMPLE = 4000  # documents used to train the tokenizer

Progress = Callable[[str], None] | None


def say(progress: Progress, msg: str) -> None:
    """Report a build step to ``progress`` (when given)."""
    if progress:
        progress(msg)


def check_tokenizer_args(kind: str, vocab: int) -> None:
    require(kind in KINDS, "--tokenizer", f"must be one of {', '.join(KINDS)}; got {kind!r}")
    require(vocab >= 300, "--vocab", f"must be at least 300 (bytes + specials); got {vocab}")


def pool_texts(*, names: bool) -> list[str]:
    """Every attribute value of the pools (and, with ``names``, every name part) as tokenizer
    training text, so that every value the data can hold is in the vocabulary."""
    pools = P.load_pools()
    values = [
        *pools.cities,
        *pools.universities,
        *pools.majors,
        *pools.companies,
        *pools.company_hq,
    ]
    # Every pronoun form, often enough that BPE makes each (with its leading space) one token:
    # the measure reads the gender across the forms at the first pronoun (measure.knowledge).
    pronouns = [" ".join(w for forms in PRONOUN_FORMS.values() for w in forms)] * 1000
    return (
        [*values, *pronouns, *pools.first, *pools.middle, *pools.last]
        if names
        else [
            *values,
            *pronouns,
        ]
    )


def training_texts(docs: Iterable[Document], extra: list[str]) -> Iterator[str]:
    """Tokenizer training text: the documents' texts, then ``extra``."""
    yield from (d.text for d in docs)
    yield from extra


def document_tokens(source, tok: KTokenizer) -> set[int]:
    """eos and the tokens of every person's document at exposure 0 of ``source``."""
    used: set[int] = {tok.eos_id}
    for doc in source.documents(0, np.arange(source.n)):
        used.update(tok.encode_pieces(doc.pieces)[0])
    return used


def make_manifest(
    kind: str,
    params: dict,
    seed: int,
    bits: dict[str, float],
    tok: KTokenizer,
    used: set[int],
    docs: list[Document],
    attributes: list[str],
) -> dict:
    """The manifest of a dataset: what it is, its exact bits and its vocabulary statistics
    (tokens per document over the first 1000 of ``docs``, eos included)."""
    lengths = [len(tok.encode_pieces(d.pieces)[0]) + 1 for d in docs[:1000]]
    return {
        "kind": kind,
        "params": params,
        "seed": seed,
        "bits": bits,
        "vocab": {
            "tokenizer": tok.kind,
            "vocab_size": tok.vocab_size,
            "used_tokens": len(used),
            "mean_tokens_per_document": float(np.mean(lengths)),
        },
        "attributes": attributes,
    }


def prepare_out_dir(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` without ``force``, and an ``out`` we cannot create."""
    require_writable(out, "--out")
    if out.exists():
        require(force or not any(out.iterdir()), "--out", f"{out} is not empty (use --force)")


def write_dataset(
    out: Path,
    manifest: dict,
    population,
    tok: KTokenizer,
    extras: dict | None = None,
    *,
    force: bool,
) -> None:
    """Write atomically: into a sibling temp dir, then rename over ``out``; a failed write
    (a full disk) leaves nothing behind (`kcap.atomic.staged_dir`).

    ``extras`` maps further file names to objects with a ``save(path)`` method (the repetitive
    junk population, bioR rewrites); the ``build_*`` functions return them as a fourth item."""
    prepare_out_dir(out, force)
    with staged_dir(out) as tmp:
        population.save(tmp / POPULATION)
        for name, obj in (extras or {}).items():
            obj.save(tmp / name)
        tok.save(tmp / TOKENIZER)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
