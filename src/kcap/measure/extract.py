"""The knowledge-extraction probe (SPEC §2 QA; paper §1.6, Parameter 3, Figure 10): is the
knowledge a model stores usable, or only recitable after the biography-style prefix it was
trained on?

Protocol. The people are split in two halves by a seeded permutation (`split_people`; the
first half, of floor(N/2) people, fine-tunes, the other half is held out). A *copy* of the model
is fine-tuned on every QA pair of the fine-tuning half (`kcap.data.qa`: bioS's six questions,
our one-per-attribute bioD form), each trained as its own sequence ``<|eos|> Q: {question} A:
{answer} <|eos|>`` with the loss on the answer's tokens and the closing ``<|eos|>`` only; the
question is never a target. Then each held-out person's questions are answered by greedy
decoding and scored by exact match: the answer's tokens and then ``<|eos|>`` (so stopping short
or running on is wrong). Greedy generation reproduces a sequence exactly iff each of its tokens is
the argmax given the correct ones before it, so one forward pass scores it (as
`kcap.measure.losses` does for recall).

Reported per attribute and overall (`Extraction`):
- memorisable accuracy: the measure's recall accuracy (greedy exact match of each value after
  its training-style prefix; `kcap.measure.measure`, not re-implemented here), on the model
  before fine-tuning, over the people the measure scores;
- extractable accuracy: the QA exact match on the held-out half;
- chance: for each attribute the frequency of its most common answer among the held-out people,
  the best any one fixed answer can score there (never below 1/the number of possible values,
  also reported as ``uniform``, and far above it when the held-out half is small).
Overall figures average bioS's five attributes (the paper's; the work city is the employer's
headquarters, so it is trained and reported but left out, as Part 3.3 does) or all K of bioD.
The fine-tuning half's own QA accuracy is reported too: it says whether fine-tuning taught the
format at all.

Settings (`ExtractSettings`) follow the paper's Parameter 3 where it applies: LoRA of rank r = 8
on the query/value maps, no warmup, linear decay to 0, lr 1e-3, weight decay 0.1, batch 96;
AdamW as in training (β 0.9/0.98, ε 1e-6, clip 1.0). Two departures, for our scale:
- no embedding adapter by default (``embedding_rank`` 0; the paper's r' is 8-128, the best of
  a grid). With a few dozen fine-tuning people an embedding adapter can store their answers in
  their names' embeddings instead of learning to read the stored knowledge: on a memorised
  bioS(40) run (2 layers, d 64) the default settings with the paper's r' = 128 (capped at
  d) and 1000 steps answered 14% of the held-out questions, against 86% without it.
  ``embedding_rank`` > 0 gives the paper's form.
- the length: the paper's 75,000 steps of 96 are about 24 passes over the QA pairs of
  bioS(100K)'s fine-tuning half, so the length is set in passes (``epochs``, default 24), but
  at least ``min_steps`` (default 600) steps: on that bioS(40) run (120 QA pairs) the defaults
  reached 0.57 held-out accuracy at 300 steps and 0.90 at 600.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from kcap.data.biod import BioDPopulation
from kcap.data.bios import BioSPopulation
from kcap.data.qa import QA, qa_items
from kcap.data.templates import ATTRIBUTES
from kcap.errors import KcapError, require
from kcap.measure.lora import add_lora, lora_parameters
from kcap.measure.measurement import Measurement

#: The stream tag of the split's permutation (bioS tags 0-12 are the datasets'; see
#: `kcap.data.bios`): the split never shares a random stream with the data.
TAG_SPLIT = 101
#: Target value of positions that are not trained on (the question, the padding).
IGNORE = -100
METHODS = ("lora", "full")
#: bioS attributes in the overall figures (the paper's five; the work city is fixed by the
#: employer). `kcap.measure.knowledge.BIOS_RECALL` is the same list for recall accuracy.
BIOS_OVERALL = ATTRIBUTES[:5]
CHANCE_RULE = (
    "chance = the frequency of the most common answer among the held-out people (the best any "
    "one fixed answer scores there); uniform = 1 / the number of possible values"
)


@dataclass(frozen=True)
class ExtractSettings:
    """How the probe fine-tunes (module docstring). ``steps`` overrides ``epochs`` and
    ``min_steps``; ``seed`` draws the split, the adapters' initialisation and the QA order."""

    method: Literal["lora", "full"] = "lora"
    embedding_rank: int = 0
    qv_rank: int = 8
    epochs: float = 24.0
    min_steps: int = 600
    steps: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.1
    batch_size: int = 96
    seed: int = 0

    def check(self) -> ExtractSettings:
        """Refuse a bad setting: a `KcapError` naming its command-line option."""
        require(
            self.method in METHODS,
            "--method",
            f"must be one of {', '.join(METHODS)}; got {self.method!r}",
        )
        for option, value in (("--embedding-rank", self.embedding_rank), ("--rank", self.qv_rank)):
            require(value >= 0, option, f"must be >= 0; got {value}")
        require(
            self.method != "lora" or self.embedding_rank + self.qv_rank > 0,
            "--rank",
            "LoRA needs a rank above 0 on the embedding or on q/v",
        )
        require(
            math.isfinite(self.epochs) and self.epochs > 0,
            "--epochs",
            f"must be > 0; got {self.epochs}",
        )
        require(self.min_steps >= 0, "--min-steps", f"must be >= 0; got {self.min_steps}")
        require(self.steps is None or self.steps >= 1, "--steps", f"must be >= 1; got {self.steps}")
        require(math.isfinite(self.lr) and self.lr > 0, "--lr", f"must be > 0; got {self.lr}")
        require(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            "--weight-decay",
            f"must be >= 0; got {self.weight_decay}",
        )
        require(self.batch_size >= 1, "--batch-size", f"must be >= 1; got {self.batch_size}")
        require(self.seed >= 0, "--seed", f"must be >= 0; got {self.seed}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        """A stable id of these settings (the results store keys an extraction by it)."""
        from kcap.training.config import config_hash

        return config_hash(self.to_dict())

    def total_steps(self, n_pairs: int) -> int:
        """Optimizer steps for ``n_pairs`` fine-tuning QA pairs."""
        if self.steps is not None:
            return self.steps
        passes = math.ceil(self.epochs * n_pairs / self.batch_size)
        return max(self.min_steps, passes)


@dataclass
class Example:
    """One encoded QA pair: ``ids`` = ``<|eos|>`` prompt answer ``<|eos|>``; the last
    ``n_answer`` ids (the answer and the closing ``<|eos|>``) are the targets."""

    person: int
    attribute: str
    ids: list[int]
    n_answer: int


@dataclass
class Extraction:
    """What the probe found (module docstring); ``to_dict`` is RUN_DIR/extract.json."""

    kind: str
    dataset: dict  # the dataset's parameters (its manifest's: n, variant, bioD's k, c, ...)
    n_people: int
    settings: dict
    settings_hash: str
    split: dict
    finetune: dict
    attributes: list[str]  # every attribute asked, in order
    overall_attributes: list[str]  # those averaged in the overall figures
    memorisable: dict  # {"overall", "per_attribute", "source", "n_measured"}
    extractable: dict  # {"overall", "per_attribute", "n_people"}
    finetune_accuracy: dict  # the fine-tuning half's own QA accuracy
    chance: dict  # {"overall", "per_attribute", "uniform", "rule"}
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------ data


def supported(dataset) -> None:
    """Refuse a dataset with no questions to ask: people with attributes only (bioS, bioR, a
    junk mixture's useful people, bioD), never random strings."""
    require(
        isinstance(dataset.population, BioSPopulation | BioDPopulation),
        "RUN_DIR",
        f"extraction needs people with attributes (bioS, bioR, bioD, or a junk mixture of "
        f"them); a {dataset.kind} dataset has no questions to ask",
    )


def split_people(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fine-tuning half, held-out half), sorted person ids: floor(n/2) and ceil(n/2) people
    from a permutation keyed by ``seed`` alone (the same split for every model of a dataset)."""
    require(n >= 2, "RUN_DIR", f"extraction needs at least 2 people; the dataset has {n}")
    perm = np.random.default_rng(np.random.SeedSequence([seed, TAG_SPLIT])).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def attributes_of(population) -> tuple[list[str], list[str]]:
    """(every attribute asked, those in the overall figures)."""
    if isinstance(population, BioDPopulation):
        names = [f"ID {a + 1}" for a in range(population.params.k)]
        return names, names
    return list(ATTRIBUTES), list(BIOS_OVERALL)


def encode(tok, person: int, qa: QA) -> Example:
    """The token ids of one QA pair, the answer as its biography pieces tokenize."""
    prompt = list(tok.piece_ids(qa.prompt))
    answer = [i for piece in qa.answer_pieces for i in tok.piece_ids(piece)]
    return Example(
        person, qa.attribute, [tok.eos_id, *prompt, *answer, tok.eos_id], len(answer) + 1
    )


def examples_of(dataset, people: np.ndarray) -> list[Example]:
    """Every QA pair of ``people``, encoded, in (person, attribute) order."""
    pop, tok = dataset.population, dataset.tokenizer
    return [encode(tok, int(p), qa) for p in people for qa in qa_items(pop, int(p))]


def check_questions(dataset) -> None:
    """Refuse a tokenizer that cannot tell the questions apart (a word-level vocabulary that
    turns a question's distinguishing words into ``<|unk|>``)."""
    pop, tok = dataset.population, dataset.tokenizer
    prompts = [tuple(tok.piece_ids(qa.prompt)) for qa in qa_items(pop, 0)]
    require(
        len(set(prompts)) == len(prompts),
        "RUN_DIR",
        "the dataset's tokenizer cannot tell its questions apart (unknown words); "
        "extraction needs a tokenizer that encodes them",
    )


def batch_tensors(batch: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a batch: targets are the answer tokens and the closing
    ``<|eos|>``, `IGNORE` elsewhere (the question, the padding)."""
    width = max(len(e.ids) for e in batch) - 1
    x = torch.full((len(batch), width), pad_id, dtype=torch.long)
    y = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(batch):
        ids = torch.as_tensor(e.ids, dtype=torch.long)
        n = len(e.ids) - 1
        x[i, :n] = ids[:-1]
        y[i, n - e.n_answer : n] = ids[len(e.ids) - e.n_answer :]
    return x, y


# ------------------------------------------------------------------------------ fine-tuning

BatchHook = Callable[[list[Example], torch.Tensor, torch.Tensor], None]


def prepare(model: torch.nn.Module, settings: ExtractSettings) -> tuple[list, dict]:
    """Make ``model`` (a copy) ready to fine-tune: LoRA adapters or every weight trainable.
    Returns (the parameters to train, a description)."""
    if settings.method == "full":
        params = list(model.parameters())
        for p in params:
            p.requires_grad_(True)
        return params, {"method": "full", "trainable_params": sum(p.numel() for p in params)}
    ranks = add_lora(model, settings.embedding_rank, settings.qv_rank)
    params = lora_parameters(model)
    return params, {
        "method": "lora",
        "embedding_rank": ranks.embedding,
        "qv_rank": ranks.qv,
        "trainable_params": sum(p.numel() for p in params),
    }


def finetune(
    model: torch.nn.Module,
    examples: list[Example],
    settings: ExtractSettings,
    *,
    pad_id: int,
    device: torch.device,
    progress: Callable[[int, float], None] | None = None,
    on_batch: BatchHook | None = None,
) -> dict:
    """Fine-tune ``model`` in place on ``examples``: AdamW (decay on matrices only), no warmup,
    the lr decaying linearly to 0, gradients clipped at 1. Batches walk seeded permutations of
    the examples, pass after pass. ``on_batch`` sees each batch as it goes to the optimizer."""
    params, info = prepare(model, settings)
    steps = settings.total_steps(len(examples))
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": settings.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=settings.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, TAG_SPLIT, 1]))
    order: list[int] = []
    model.train()
    loss_value = float("nan")
    for step in range(steps):
        while len(order) < settings.batch_size:
            order += rng.permutation(len(examples)).tolist()
        picked, order = order[: settings.batch_size], order[settings.batch_size :]
        batch = [examples[i] for i in picked]
        x, y = batch_tensors(batch, pad_id)
        if on_batch is not None:
            on_batch(batch, x, y)
        x, y = x.to(device), y.to(device)
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * (1 - step / steps)
        logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        aux = getattr(model, "aux_loss", None)
        total = loss + aux() if aux is not None else loss
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise KcapError("--lr", f"fine-tuning diverged (loss {loss_value}); try a lower lr")
        if progress:
            progress(1, loss_value)
    model.eval()
    return {**info, "steps": steps, "qa_pairs": len(examples), "final_loss": loss_value}


@torch.no_grad()
def answered(
    model: torch.nn.Module,
    examples: list[Example],
    *,
    pad_id: int,
    device: torch.device,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Whether greedy decoding after each example's prompt gives exactly its answer and then
    ``<|eos|>``: every target token is the argmax given the correct tokens before it."""
    was_training = model.training
    model.eval()
    out = np.empty(len(examples), dtype=bool)
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        x, y = batch_tensors(batch, pad_id)
        x, y = x.to(device), y.to(device)
        hit = (model(x).argmax(-1) == y) | (y == IGNORE)
        out[start : start + len(batch)] = hit.all(-1).cpu().numpy()
        if progress:
            progress(len(batch))
    if was_training:
        model.train()
    return out


# ------------------------------------------------------------------------------ scoring


def per_attribute(examples: list[Example], hits: np.ndarray, attributes: list[str]) -> dict:
    """Exact-match accuracy of each attribute."""
    out = {}
    for a in attributes:
        mask = np.array([e.attribute == a for e in examples])
        out[a] = float(hits[mask].mean()) if mask.any() else None
    return out


def chance_levels(dataset, people: np.ndarray, attributes: list[str]) -> tuple[dict, dict]:
    """Per attribute: (the most common answer's frequency among ``people``, 1/possible values)."""
    pop = dataset.population
    answers: dict[str, Counter] = {a: Counter() for a in attributes}
    for p in people:
        for qa in qa_items(pop, int(p)):
            answers[qa.attribute][qa.answer] += 1
    common = {a: answers[a].most_common(1)[0][1] / len(people) for a in attributes}
    if isinstance(pop, BioDPopulation):
        uniform = {a: float(pop.params.d) ** -pop.params.c for a in attributes}
    else:
        from kcap.data import pools as P

        sizes = dict(
            zip(
                ATTRIBUTES,
                (P.N_DATES, P.N_CITIES, P.N_UNIVERSITIES, P.N_MAJORS, P.N_COMPANIES),
                strict=False,
            )
        )
        sizes["work_city"] = len(set(P.load_pools().company_hq))
        uniform = {a: 1.0 / sizes[a] for a in attributes}
    return common, uniform


def _mean(values: dict, keys: list[str]) -> float | None:
    picked = [values[k] for k in keys if values.get(k) is not None]
    return float(np.mean(picked)) if picked else None


def _digest(people: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(people, dtype=np.int64).tobytes()).hexdigest()[:16]


def extract(
    model: torch.nn.Module,
    dataset,
    settings: ExtractSettings,
    *,
    memorisable: Measurement | dict | None = None,
    memorisable_source: str = "measured",
    P_count: int | None = None,
    eval_seed: int | None = None,
    max_people: int | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    bar=None,
    on_batch: BatchHook | None = None,
) -> Extraction:
    """Run the probe on ``model`` (left untouched: a copy is fine-tuned). ``memorisable``: the
    model's measurement when there is one already (RUN_DIR/measure.json), else it is measured
    here (`kcap.measure.measure`, with ``eval_seed``, ``max_people``, ``P_count``). ``bar``: a
    `rich.progress.Progress` to show fine-tuning and evaluation on (tasks with an ``info``
    field). ``on_batch``: see `finetune`."""
    settings.check()
    supported(dataset)
    check_questions(dataset)
    device = torch.device(device)
    t0 = time.perf_counter()
    attributes, overall = attributes_of(dataset.population)
    if memorisable is None:
        from kcap.measure import measure

        task = _task(bar, "measuring recall", dataset.n if max_people is None else max_people)
        memorisable = measure(
            model.to(device),
            dataset,
            P_count=P_count or 1,
            eval_seed=eval_seed,
            max_people=max_people,
            batch_size=batch_size,
            device=device,
            progress=_advance(bar, task),
        )
    m = memorisable.to_dict() if isinstance(memorisable, Measurement) else memorisable
    train_people, held_out = split_people(dataset.n, settings.seed)
    train, test = examples_of(dataset, train_people), examples_of(dataset, held_out)
    pad_id = dataset.tokenizer.eos_id

    torch.manual_seed(settings.seed)
    tuned = copy.deepcopy(model).to(device)
    steps = settings.total_steps(len(train))
    task = _task(bar, "fine-tuning", steps)

    def step_done(n: int, loss: float) -> None:
        if bar is not None:
            bar.update(task, advance=n, info=f"loss {loss:.3f}")

    t1 = time.perf_counter()
    log = finetune(
        tuned, train, settings, pad_id=pad_id, device=device, progress=step_done, on_batch=on_batch
    )
    log["seconds"] = time.perf_counter() - t1
    task = _task(bar, "evaluating", len(test) + len(train))
    hits, train_hits = (
        answered(
            tuned,
            qa,
            pad_id=pad_id,
            device=device,
            batch_size=batch_size,
            progress=_advance(bar, task),
        )
        for qa in (test, train)
    )
    extractable = per_attribute(test, hits, attributes)
    own = per_attribute(train, train_hits, attributes)
    common, uniform = chance_levels(dataset, held_out, attributes)
    recall = {a: m["recall_per_attribute"].get(a) for a in attributes}
    notes = []
    if not isinstance(dataset.population, BioDPopulation):
        notes.append(
            "overall figures average birth date, birth city, university, major and employer "
            "(the paper's five); the work city, fixed by the employer, is asked and reported "
            "but not averaged, and the measure has no recall figure for it"
        )
    else:
        notes.append(
            'bioD questions are kcap\'s own form ("What is ID k of {name}?"); the paper has no '
            "bioD QA"
        )
    return Extraction(
        kind=dataset.kind,
        dataset=dict(dataset.manifest.get("params") or {}),
        n_people=dataset.n,
        settings=settings.to_dict(),
        settings_hash=settings.hash(),
        split={
            "seed": settings.seed,
            "finetune_people": len(train_people),
            "held_out_people": len(held_out),
            "finetune_digest": _digest(train_people),
            "held_out_digest": _digest(held_out),
        },
        finetune=log,
        attributes=attributes,
        overall_attributes=overall,
        memorisable={
            "overall": m["recall_accuracy"],
            "per_attribute": recall,
            "source": memorisable_source,
            "n_measured": m["n_measured"],
        },
        extractable={
            "overall": _mean(extractable, overall),
            "per_attribute": extractable,
            "n_people": len(held_out),
        },
        finetune_accuracy={"overall": _mean(own, overall), "per_attribute": own},
        chance={
            "overall": _mean(common, overall),
            "per_attribute": common,
            "uniform": uniform,
            "rule": CHANCE_RULE,
        },
        seconds=time.perf_counter() - t0,
        notes=notes,
    )


def _task(bar, description: str, total: int):
    return None if bar is None else bar.add_task(description, total=total, info="")


def _advance(bar, task) -> Callable[[int], None] | None:
    if bar is None:
        return None
    return lambda n: bar.update(task, advance=n)
