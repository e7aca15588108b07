"""The training stream for a dataset: one function that picks the right stream for its kind.

- bioS, bioD, bioR: `ExposureStream` over the dataset's documents (E exposures per person);
  bioS and bioD render by vectorised gathers over pre-tokenised pieces, bioR document by document.
- junk (bioS or bioD): `MixtureStream` of the useful exposure stream and the endless junk stream.
- random strings: `SequenceStream`, one sequence per row (``window`` must cover S tokens).
"""

from __future__ import annotations

from kcap.data.bios import TAG_JUNK_ORDER
from kcap.data.junk import junk_source
from kcap.errors import require
from kcap.tokenization.mixture import MixtureStream
from kcap.tokenization.rows import SequenceStream
from kcap.tokenization.stream import ExposureStream

#: Exposures of the junk stream: it never runs out before the useful stream does.
ENDLESS = 1 << 62


def make_stream(
    dataset,
    *,
    exposures: int,
    seed: int,
    window: int,
    state: dict | None = None,
    vectorised: bool = True,
):
    """The stream of ``exposures`` exposures of ``dataset`` in ``window``-token windows, ordered
    by ``seed`` and resumed from ``state`` (a ``state_dict()``) when given. ``vectorised``: the
    exposure streams render by gathers where the family allows it (the default: the same windows,
    faster); False forces the per-document reference path."""
    tok = dataset.tokenizer
    if dataset.kind == "random":
        s = dataset.population.s
        require(window >= s, "training.window", f"must be at least S = {s} for random strings")
        stream = SequenceStream(
            dataset.population.token_ids(tok), tok.eos_id, exposures=exposures, seed=seed
        )
    else:
        common = {"seed": seed, "window": window, "vectorised": vectorised}
        stream = ExposureStream(dataset.source(), tok, exposures=exposures, **common)
        if dataset.kind == "junk":
            junk = ExposureStream(
                junk_source(dataset), tok, exposures=ENDLESS, order_tag=TAG_JUNK_ORDER, **common
            )
            stream = MixtureStream(stream, junk, dataset.manifest["params"]["ratio"])
    if state is not None:
        stream.load_state_dict(state)
    return stream
