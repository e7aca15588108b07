"""The knowledge measure (SPEC §4): span losses p1/p2/p3, the bit lower bound, R, recall.

Evaluation renders every person's biography once with a fixed evaluation seed (the training
distribution, but documents the model never saw verbatim), streams people in batches (memory is
independent of N), sums each span's token losses, and applies Definition 4.3 (bioS) or 4.1 (bioD)
of the paper. Each bit term is clipped at zero and the clipping is reported.

What a span charges (every rule has an adversarial oracle test, ``tests/test_oracles.py``):
- each value at its first occurrence, plus the price of stopping where it ends when other values
  of its pool extend it (`kcap.measure.spans`);
- bioS p2: the paper's six attributes **and the work city**: it is fixed by the employer, but when
  the shuffled sentences put it first it tells ~6.5 bits of the employer, so only the joint loss
  of (employer, work city) is sound (SPEC §4). It is reported inside "employer";
- the gender at the first pronoun, among all pronoun forms (`gender_probe`); no pronoun: ln 2.

Which bound applies follows `Dataset.measure_kind` (`kcap.measure.measure` dispatches): a junk
mixture is measured with its useful data's bound (bioS, or bioD) on its useful people only
(rendered as in training, domain token included), bioR with the bioS bound on each person's
held-out rewrite; random strings by memorised bits (`kcap.measure.memorization`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from kcap.data import pools as P
from kcap.data.dataset import DEFAULT_EVAL_SEED, Dataset
from kcap.data.documents import (
    BIRTH_CITY,
    EMPLOYER,
    GENDER,
    LABEL_NAMES,
    MAJOR,
    NAME,
    UNIVERSITY,
    VALUE_BASE,
    WORK_CITY,
)
from kcap.data.templates import PRONOUN_FORMS
from kcap.measure.losses import Query, token_losses
from kcap.measure.measurement import LOG2E, Measurement
from kcap.measure.spans import Continuations, TokenSpan, continuations, end_loss, first_spans

#: bioS attributes with bits (the paper's 𝒦: work city is fixed by the employer).
BIOS_KNOWLEDGE = ("birth_date", "birth_city", "university", "major", "employer", "gender")
#: bioS spans charged in p2: 𝒦 plus the work city, whose loss joins the employer's (SPEC §4).
BIOS_CHARGED = (*BIOS_KNOWLEDGE, "work_city")
#: The piece label of each charged bioS span (`kcap.data.documents` names them).
BIOS_LABEL = {name: label for label, name in LABEL_NAMES.items() if name in BIOS_CHARGED}
BIOS_POOL_SIZES = {
    "birth_date": P.N_DATES,
    "birth_city": P.N_CITIES,
    "university": P.N_UNIVERSITIES,
    "major": P.N_MAJORS,
    "employer": P.N_COMPANIES,
    "gender": P.N_GENDERS,
}
#: Attributes whose exact-match recall makes up `recall_accuracy` (the paper's five).
BIOS_RECALL = ("birth_date", "birth_city", "university", "major", "employer")


FULLNAME_NOTE = (
    "bioS-fullname: p1 is the first full name only (the later ones repeat it); the evaluation "
    "biography is drawn to state the gender (a pronoun in some template), as the training "
    "stream does for all but about a third of the people at each exposure."
)


def notes_for(dataset: Dataset) -> list[str]:
    """What the figures of this dataset's measurement mean beyond the SPEC's definitions."""
    if dataset.kind == "bios" and dataset.manifest["params"].get("variant") == "fullname":
        return [FULLNAME_NOTE]
    return []


GenderProbe = tuple[int, list[int], int]  # (position, candidate ids, how many are correct)


def gender_probe(tok, doc, labels) -> GenderProbe | None:
    """Where the gender is read and which tokens stand for each gender there.

    The first pronoun's token also says which template form comes next ("She" vs "Her"); that
    choice is template randomness, not knowledge about the person. So the gender is read as the
    model's probability of the person's gender among all gendered pronoun forms at that position
    (a valid generator for Theorem 3.2: it uses only the model and the template slot). Returns
    None when the pronoun is not a single token, or is a word outside the template forms (a bioR
    rewrite's "herself" or "HE"); then its token loss is used as it is.
    """
    piece = next((p for p in doc.pieces if p[1] == GENDER), None)
    positions = [i for i, lab in enumerate(labels) if lab == GENDER]
    if piece is None or len(positions) != 1:
        return None
    text = piece[0]
    word = text.strip()
    space = text[: len(text) - len(text.lstrip())]
    capital = word[0].isupper()
    gender = next((g for g in (0, 1) if word in PRONOUN_FORMS[(capital, g)]), None)
    if gender is None:
        return None
    own = [tok.piece_ids(space + w) for w in PRONOUN_FORMS[(capital, gender)]]
    other = [tok.piece_ids(space + w) for w in PRONOUN_FORMS[(capital, 1 - gender)]]
    if any(len(ids) != 1 for ids in own + other):
        return None
    return positions[0], [ids[0] for ids in own + other], len(own)


def gender_choice(logp: np.ndarray, probe: GenderProbe) -> tuple[float, bool]:
    """(loss in nats, correct?) of the gender read from the candidates' log-probabilities."""
    n_own = probe[2]
    own, other = np.logaddexp.reduce(logp[:n_own]), np.logaddexp.reduce(logp[n_own:])
    return float(np.logaddexp(own, other) - own), bool(own > other)


class ValueEndings:
    """The continuation tables of a dataset's pools (`kcap.measure.spans`), built once: names
    (keyed by the last name's tokens, which end every name span) and, for bioS-like data, each
    attribute's values (as rendered with a leading space, and without one for free text). Names
    come from the dataset's name pools (``name_pool``: each cut to its first entries)."""

    def __init__(self, population, tok, *, bios: bool, name_pool: int | None = None):
        pools = P.load_pools()
        self.population = population
        self.tok = tok
        self.bios = bios
        self.names = continuations(tok, [" " + x for x in pools.last[:name_pool]])
        self.values: dict[int, Continuations] = {}
        if bios:
            texts = (pools.cities, pools.universities, pools.majors, pools.companies)
            labels = (BIRTH_CITY, UNIVERSITY, MAJOR, EMPLOYER)
            for label, values in zip(labels, texts, strict=True):
                self.values[label] = continuations(tok, [*values, *(" " + v for v in values)])
            hq = pools.company_hq
            self.values[WORK_CITY] = continuations(tok, [*hq, *(" " + v for v in hq)])

    def queries(self, person: int, ids: list[int], spans: dict) -> list[tuple[tuple, Query]]:
        """(span key, query) for each span of this document whose tokens other values extend."""
        out = []
        for key, span in spans.items():
            if key[0] == NAME:  # every name span ends with its last name's tokens
                last = P.name_parts(self.population.name[person])[2]
                cont = self.names.get(self.tok.piece_ids(" " + last))
            else:
                cont = self.values.get(key[0], {}).get(tuple(ids[span.start : span.stop]))
            if cont:
                out.append((key, (span.stop, cont)))
        return out


@dataclass
class ScoredDocument:
    """One evaluation document after the model's pass: token losses and argmax hits, the first
    span of every value, the end-of-value charges and the gender read at the first pronoun."""

    nll: np.ndarray
    hit: np.ndarray
    spans: dict[tuple[int, int], TokenSpan]
    end_charge: dict[tuple[int, int], float]
    gender: tuple[float, bool] | None  # (loss, correct) when read among the pronoun forms

    def loss(self, key: tuple[int, int]) -> float:
        """Summed loss of value ``key`` at its first occurrence, with its end charge."""
        span = self.spans[key]
        return float(self.nll[span.start : span.stop].sum()) + self.end_charge.get(key, 0.0)

    def recalled(self, keys: list[tuple[int, int]]) -> bool:
        """Whether greedy decoding reproduces every token of these spans."""
        return all(self.hit[self.spans[k].start : self.spans[k].stop].all() for k in keys)


def _scored_documents(
    model, source, tok, endings: ValueEndings, people: np.ndarray, batch_size: int, device, progress
) -> Iterator[ScoredDocument]:
    """Evaluation documents of ``people``, scored in batches."""
    bios = endings.bios
    for start in range(0, len(people), batch_size):
        block = people[start : start + batch_size]
        docs = list(source.documents(0, block))
        encoded = [tok.encode_pieces(d.pieces) for d in docs]
        spans = [first_spans(labels, index) for _, labels, index in encoded]
        probes = [
            gender_probe(tok, d, e[1]) if bios else None for d, e in zip(docs, encoded, strict=True)
        ]
        ends = [
            endings.queries(d.person, e[0], s) for d, e, s in zip(docs, encoded, spans, strict=True)
        ]
        queries = [
            ([(p[0], p[1])] if p else []) + [q for _, q in end]
            for p, end in zip(probes, ends, strict=True)
        ]
        losses, hits, picked = token_losses(
            model, [e[0] for e in encoded], tok.eos_id, device, queries=queries
        )
        for i in range(len(docs)):
            answers = iter(picked[i])
            gender = gender_choice(next(answers), probes[i]) if probes[i] else None
            charge = {key: end_loss(next(answers)) for key, _ in ends[i]}
            yield ScoredDocument(losses[i], hits[i], spans[i], charge, gender)
        if progress:
            progress(len(block))


@torch.no_grad()
def measure_knowledge(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    P_count: int,
    params: dict[str, int] | None = None,
    eval_seed: int = DEFAULT_EVAL_SEED,
    max_people: int | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> Measurement:
    """The bioS or bioD bound on the knowledge ``model`` holds about ``dataset`` (every person
    unless ``max_people``); `kcap.measure.measure` picks this or memorisation by dataset kind."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    tok = dataset.tokenizer
    source = dataset.source(eval_=True, eval_seed=eval_seed)
    n = dataset.n
    m = n if max_people is None else min(n, max_people)
    people = (
        np.arange(n) if m == n else np.random.default_rng(eval_seed).choice(n, m, replace=False)
    )
    bios = dataset.measure_kind == "bios"
    attrs = list(BIOS_CHARGED) if bios else list(range(dataset.manifest["params"]["k"]))
    chunks = 1 if bios else dataset.manifest["params"]["c"]
    name_sum = first_chunk_sum = 0.0
    loss_sum = dict.fromkeys(map(str, attrs), 0.0)
    hit_sum = dict.fromkeys(map(str, attrs), 0.0)
    seen = dict.fromkeys(map(str, attrs), 0)
    name_pool = dataset.manifest["params"].get("name_pool")
    endings = ValueEndings(dataset.population, tok, bios=bios, name_pool=name_pool)
    scored = _scored_documents(model, source, tok, endings, people, batch_size, device, progress)
    for doc in scored:
        name_sum += doc.loss((NAME, 0))
        for a in attrs:
            keys = [(BIOS_LABEL[a] if bios else VALUE_BASE + a, j) for j in range(chunks)]
            if any(key not in doc.spans for key in keys):
                if a == "gender":  # no pronoun: the gender is unknown, ln 2
                    loss_sum[a] += math.log(2)
                    seen[a] += 1
                # else a bioR value sharing another value's occurrence: charged there
                continue
            seen[str(a)] += 1
            if a == "gender" and doc.gender is not None:
                loss, correct = doc.gender
                loss_sum[a] += loss
                hit_sum[a] += float(correct)
                continue
            loss_sum[str(a)] += sum(doc.loss(key) for key in keys)
            hit_sum[str(a)] += float(doc.recalled(keys))
            if not bios:
                first_chunk_sum += doc.loss(keys[0])
    if was_training:
        model.train()
    mean_loss = {a: s / m for a, s in loss_sum.items()}
    recall = {a: hit_sum[a] / max(1, seen[a]) for a in hit_sum}
    p1 = name_sum / m
    name_bits = n * (math.log2(P.name_space(name_pool)) - p1 * LOG2E)
    details: dict = {}
    if bios:
        # the work city is charged with the employer: their joint loss carries log2 263 bits
        work_city = mean_loss.pop("work_city")
        mean_loss["employer"] += work_city
        recall.pop("work_city")
        details["work_city_loss"] = work_city
        p2 = sum(mean_loss.values())
        p3 = None
        value_bits = n * (P.ATTRIBUTE_BITS - p2 * LOG2E)
        diversity_bits = 0.0
        per_attr = {
            a: n * (math.log2(BIOS_POOL_SIZES[a]) - mean_loss[a] * LOG2E) for a in BIOS_KNOWLEDGE
        }
        recall_acc = float(np.mean([recall[a] for a in BIOS_RECALL]))
    else:
        prm = dataset.manifest["params"]
        k, c, d, length, t = prm["k"], prm["c"], prm["d"], prm["l"], prm["t"]
        p2 = sum(mean_loss.values()) / k  # averaged over (person, attribute)
        p3 = first_chunk_sum / (m * k)
        value_bits = n * k * (c * math.log2(d) - p2 * LOG2E)
        diversity_bits = k * d * (length * math.log2(t) - math.log2(d) - p3 * LOG2E)
        per_attr = {
            f"ID {int(a) + 1}": n * (c * math.log2(d) - mean_loss[a] * LOG2E) for a in mean_loss
        }
        recall_acc = float(np.mean(list(recall.values())))
        mean_loss = {f"ID {int(a) + 1}": v for a, v in mean_loss.items()}
        recall = {f"ID {int(a) + 1}": v for a, v in recall.items()}
    raw = {"name": name_bits, "value": value_bits, "diversity": diversity_bits}
    bits = {key: max(0.0, v) for key, v in raw.items()}
    bits["total"] = sum(bits.values())
    raw["total"] = sum(raw.values())
    data_bits = float(dataset.bits["total"])
    return Measurement(
        kind=dataset.kind,
        n_people=n,
        n_measured=m,
        p1=p1,
        p2=p2,
        p3=p3,
        bits=bits,
        bits_unclipped=raw,
        clipped=[key for key in ("name", "value", "diversity") if raw[key] < 0],
        bits_per_attribute=per_attr,
        loss_per_attribute=mean_loss,
        recall_accuracy=recall_acc,
        recall_per_attribute=recall,
        P=P_count,
        R=bits["total"] / P_count,
        R_max=data_bits / P_count,
        data_bits=data_bits,
        eval_seed=eval_seed,
        params=dict(params or {}),
        details=details,
        notes=notes_for(dataset),
    )
