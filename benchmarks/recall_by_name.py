"""Which people a trained bioD model knows, by how their name tells them apart (issue 11).

On the lab recipe the models store *fewer* bits as N doubles. One candidate cause lies in the
data, not in the training: with more people, fewer of them are told apart by one name part
alone (a last name nobody else has), so more of the look-ups need two or three name parts
composed, which a two-layer model may learn more slowly. This reads a finished run's checkpoint
and splits what it holds by that:

- ``last name alone``: nobody else in the population has this person's last name;
- ``first + last``: others share the last name, nobody shares first and last name together;
- ``all three parts``: only the full name is unique.

For each class: people, the value bits held per person (K·C·log2 D less the values' loss, as
the bound counts them; the name and diversity terms are left out, they are not per person) and
the greedy recall of values. The split is by the population's names only, so a model that
stores facts regardless of the name's shape shows the same bits per person in every class.

    python benchmarks/recall_by_name.py runs/recipes-v3/sweep/runs/RUN_ID [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from kcap.data.pools import split_name
from kcap.measure.knowledge import VALUE_BASE, ValueEndings, _scored_documents
from kcap.training.trainer import load_run

CLASSES = ("last name alone", "first + last", "all three parts")


def name_class(names: np.ndarray) -> np.ndarray:
    """Index into `CLASSES` for each person of a population's name indices."""
    first, _, last = split_name(np.asarray(names, dtype=np.int64))
    lasts = Counter(last.tolist())
    pairs = Counter(zip(first.tolist(), last.tolist(), strict=True))
    out = np.full(len(names), 2)
    for i, (f, la) in enumerate(zip(first.tolist(), last.tolist(), strict=True)):
        out[i] = 0 if lasts[la] == 1 else 1 if pairs[(f, la)] == 1 else 2
    return out


@torch.no_grad()
def per_person(run_dir: Path, batch_size: int = 200) -> tuple[dict, np.ndarray, np.ndarray]:
    """(run facts with the population's names, value bits per person, recall per person) of a
    finished bioD run."""
    cfg, dataset, model, counts = load_run(run_dir)
    if dataset.kind != "biod":
        raise SystemExit(f"{run_dir}: a bioD run is needed (this one is {dataset.kind})")
    model.eval()
    prm = dataset.manifest["params"]
    k, c, d = prm["k"], prm["c"], prm["d"]
    people = np.arange(dataset.n)
    pool = prm.get("name_pool")  # as `measure_knowledge` builds them
    endings = ValueEndings(dataset.population, dataset.tokenizer, bios=False, name_pool=pool)
    source = dataset.source(eval_=True)
    docs = _scored_documents(
        model, source, dataset.tokenizer, endings, people, batch_size, "cpu", None
    )
    keys = [[(VALUE_BASE + a, j) for j in range(c)] for a in range(k)]  # each attribute's chunks
    bits, recall = np.zeros(len(people)), np.zeros(len(people))
    for i, doc in enumerate(docs):
        loss = sum(doc.loss(key) for attr in keys for key in attr)
        bits[i] = k * c * math.log2(d) - loss / math.log(2)
        recall[i] = np.mean([doc.recalled(attr) for attr in keys])
    facts = {"N": dataset.n, "P": counts["P"], "d_model": cfg.model.overrides.get("d_model")}
    facts["names"] = dataset.population.name
    return facts, bits, recall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished bioD run directories")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| run | d | N | class | people | value bits per person | recall |")
    print("|---|---|---|---|---|---|---|")
    for run_dir in args.runs:
        facts, bits, recall = per_person(run_dir)
        cls = name_class(facts["names"])
        for j, label in enumerate(CLASSES):
            sel = cls == j
            if not sel.any():
                continue
            print(
                f"| {run_dir.name} | {facts['d_model']} | {facts['N']:,} | {label} "
                f"| {int(sel.sum()):,} ({sel.mean():.0%}) | {bits[sel].mean():.1f} "
                f"| {recall[sel].mean():.1%} |"
            )


if __name__ == "__main__":
    main()
