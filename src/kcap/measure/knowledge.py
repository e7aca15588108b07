"""The knowledge measure (SPEC §4): span losses p1/p2/p3, the bit lower bound, R, recall.

Evaluation renders every person's biography once with a fixed evaluation seed (the training
distribution, but documents the model never saw verbatim), streams people in batches (memory is
independent of N), sums each span's token losses, and applies Definition 4.3 (bioS) or 4.1 (bioD)
of the paper. Each bit term is clipped at zero and the clipping is reported.

Which bound applies follows `Dataset.measure_kind`: a junk mixture is measured with its useful
data's bound (bioS, or bioD) on its useful people only (rendered as in training, domain token
included), bioR with the bioS bound on each person's held-out rewrite, random strings by
memorised bits (`kcap.measure.memorization`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from kcap.data import pools as P
from kcap.data.dataset import DEFAULT_EVAL_SEED, Dataset
from kcap.data.documents import GENDER, NAME, VALUE_BASE
from kcap.data.templates import ATTRIBUTES, PRONOUN_FORMS
from kcap.measure.losses import token_losses

LOG2E = 1.0 / math.log(2.0)
#: bioS attributes scored in p2 (work city is fixed by the employer and carries no bits).
BIOS_KNOWLEDGE = ("birth_date", "birth_city", "university", "major", "employer", "gender")
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


@dataclass
class Measurement:
    kind: str
    n_people: int
    n_measured: int
    p1: float
    p2: float
    p3: float | None
    bits: dict[str, float]
    bits_unclipped: dict[str, float]
    clipped: list[str]
    bits_per_attribute: dict[str, float]
    loss_per_attribute: dict[str, float]
    recall_accuracy: float
    recall_per_attribute: dict[str, float]
    P: int
    R: float
    R_max: float
    data_bits: float
    eval_seed: int
    params: dict[str, int] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # kind-specific extras (random strings)

    def to_dict(self) -> dict:
        return asdict(self)


GenderProbe = tuple[int, list[int], int]  # (position, candidate ids, how many are correct)


def gender_probe(tok, doc, labels) -> GenderProbe | None:
    """Where the gender is read and which tokens stand for each gender there.

    The first pronoun's token also says which template form comes next ("She" vs "Her"); that
    choice is template randomness, not knowledge about the person. So the gender is read as the
    model's probability of the person's gender among all gendered pronoun forms at that position
    (a valid generator for Theorem 3.2: it uses only the model and the template slot). Returns
    None when the pronoun is not a single token (then its token loss is used as it is).
    """
    piece = next((p for p in doc.pieces if p[1] == GENDER), None)
    positions = [i for i, lab in enumerate(labels) if lab == GENDER]
    if piece is None or len(positions) != 1:
        return None
    text = piece[0]
    word = text.strip()
    space = text[: len(text) - len(text.lstrip())]
    capital = word[0].isupper()
    gender = next(g for g in (0, 1) if word in PRONOUN_FORMS[(capital, g)])
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


@torch.no_grad()
def measure(
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
    """Measure the knowledge ``model`` holds about ``dataset`` (every person unless max_people)."""
    if dataset.measure_kind == "random":
        from kcap.measure.memorization import measure_memorization

        return measure_memorization(
            model,
            dataset,
            P_count=P_count,
            params=params,
            eval_seed=eval_seed,
            max_sequences=max_people,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
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
    attrs = [*BIOS_KNOWLEDGE, "work_city"] if bios else list(range(dataset.manifest["params"]["k"]))
    name_sum = 0.0
    loss_sum = dict.fromkeys(map(str, attrs), 0.0)
    hit_sum = dict.fromkeys(map(str, attrs), 0.0)
    first_chunk_sum = 0.0
    for start in range(0, m, batch_size):
        block = people[start : start + batch_size]
        docs = list(source.documents(0, block))
        encoded = [tok.encode_pieces(d.pieces) for d in docs]
        probes = (
            [gender_probe(tok, d, e[1]) for d, e in zip(docs, encoded, strict=True)]
            if bios
            else None
        )
        losses, hits, picked = token_losses(
            model, [e[0] for e in encoded], tok.eos_id, device, probes=probes
        )
        for i, ((_, labels, index), nll, hit) in enumerate(zip(encoded, losses, hits, strict=True)):
            labels, index = np.asarray(labels), np.asarray(index)
            name_sum += float(nll[labels == NAME].sum())
            for a in attrs:
                if bios:
                    label = GENDER if a == "gender" else 2 + ATTRIBUTES.index(a)
                    sel = labels == label
                    if not sel.any():  # no pronoun in this rendering: gender unknown, ln 2
                        loss_sum[a] += math.log(2)
                        continue
                    if a == "gender" and picked[i] is not None:
                        loss, correct = gender_choice(picked[i], probes[i])
                        loss_sum[a] += loss
                        hit_sum[a] += float(correct)
                        continue
                else:
                    sel = labels == VALUE_BASE + a
                    first_chunk_sum += float(nll[sel & (index == 0)].sum())
                loss_sum[str(a)] += float(nll[sel].sum())
                hit_sum[str(a)] += float(hit[sel].all())
        if progress:
            progress(len(block))
    if was_training:
        model.train()
    mean_loss = {a: s / m for a, s in loss_sum.items()}
    recall = {a: s / m for a, s in hit_sum.items()}
    p1 = name_sum / m
    name_bits = n * (math.log2(P.N0) - p1 * LOG2E)
    if bios:
        p2 = sum(mean_loss[a] for a in BIOS_KNOWLEDGE)
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
    )
