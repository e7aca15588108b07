"""Adversarial oracles: hand-built generators that know a chosen part of a dataset.

An oracle is a `torch.nn.Module` from token ids to logits, scored by the real `kcap.measure`
code. It is Bayes-optimal for its knowledge: at every position it predicts the next token from
what it knows and what the document has shown so far, so its true log-probability of every value
is known in closed form, and the measure must report exactly that (no more: the bound must never
credit bits a generator does not hold).

Causality: the logits at position i depend on the tokens before i, plus where each value starts
and which attribute it is (the template text before a value says both; a real model reads them
the same way). Where a value *ends* is not used: the oracle predicts stop-or-continue from its
candidates, and its stop mass goes to ``<|eos|>``. Template tokens, which the measure never
scores, are predicted one-hot.

Distributions over token sequences are mixtures (signed weights) of products of independent
fields (a full name: first, middle, last), each field a finite distribution over token sequences.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from kcap.data import pools as P
from kcap.data.biod import symbol
from kcap.data.documents import GENDER, NAME, VALUE_BASE
from kcap.data.templates import PRONOUN_FORMS

NEG = -1.0e4  # the logit of an impossible token (exp underflows to exactly 0)
Seq = tuple[int, ...]


class Field:
    """A finite distribution over token sequences, as a trie of prefix probabilities."""

    def __init__(self, seqs: Sequence[Seq], weights: Sequence[float] | None = None):
        w = np.ones(len(seqs)) if weights is None else np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        self.total: dict[Seq, float] = defaultdict(float)  # P(value starts with prefix)
        self.complete: dict[Seq, float] = defaultdict(float)  # P(value == prefix)
        self.next: dict[Seq, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        for seq, p in zip(seqs, w, strict=True):
            seq = tuple(seq)
            for cut in range(len(seq) + 1):
                self.total[seq[:cut]] += p
                if cut < len(seq):
                    self.next[seq[:cut]][seq[cut]] += p
            self.complete[seq] += p


@dataclass
class Product:
    """Independent fields read one after the other (their token sequences concatenated)."""

    fields: list[Field]

    def states(self, prefix: Seq) -> list[tuple[int, Seq, float]]:
        """(field, tokens read in it, probability of the prefix this way) after ``prefix``."""
        states = [(0, (), 1.0)]
        for x in prefix:
            new = []
            for j, pre, mass in states:
                new += self._consume(j, pre, mass, x)
            states = new
        return states

    def _consume(self, j: int, pre: Seq, mass: float, x: int) -> list[tuple[int, Seq, float]]:
        f = self.fields[j]
        total = f.total.get(pre, 0.0)
        if total == 0.0:
            return []
        out = []
        if f.total.get((*pre, x), 0.0) > 0:
            out.append((j, (*pre, x), mass * f.total[(*pre, x)] / total))
        done = f.complete.get(pre, 0.0)
        if done > 0 and j + 1 < len(self.fields):
            out += self._consume(j + 1, (), mass * done / total, x)
        return out

    def masses(self, prefix: Seq) -> tuple[float, dict[int, float], float]:
        """P(starts with prefix), P(starts with prefix + x) for each x, P(equals prefix)."""
        nxt: dict[int, float] = defaultdict(float)
        end = 0.0
        states = self.states(prefix)
        for j, pre, mass in states:
            f = self.fields[j]
            scale = mass / f.total[pre]
            for x, p in f.next.get(pre, {}).items():
                nxt[x] += scale * p
            done = scale * f.complete.get(pre, 0.0)
            if done:
                if j + 1 == len(self.fields):
                    end += done
                else:
                    for x, p in self.fields[j + 1].next[()].items():
                        nxt[x] += done * p
        return sum(s[2] for s in states), nxt, end


@dataclass
class Mixture:
    """A signed mixture of products: the oracle's belief about one value."""

    parts: list[tuple[float, Product]]

    def next_distribution(self, prefix: Seq) -> tuple[dict[int, float], float]:
        """P(next token = x | prefix) and P(the value ends | prefix)."""
        total, nxt, end = 0.0, defaultdict(float), 0.0
        for w, part in self.parts:
            t, n, e = part.masses(prefix)
            total += w * t
            end += w * e
            for x, p in n.items():
                nxt[x] += w * p
        return {x: p / total for x, p in nxt.items() if p > 0}, end / total


def point(seq: Seq) -> Mixture:
    return Mixture([(1.0, Product([Field([seq])]))])


def uniform(seqs: Sequence[Seq]) -> Mixture:
    return Mixture([(1.0, Product([Field(seqs)]))])


# ----------------------------------------------------------------------------- the oracle


@dataclass
class Knowledge:
    """What an oracle knows: whose names (and with what prior weight), and per known person
    which attributes (bioS: attribute names; bioD: attribute indices). ``chunk_sets`` (bioD):
    whether it knows each attribute's D chunks."""

    known_names: list[int] = field(default_factory=list)  # person indices
    name_weight: float = 0.0  # prior probability that a person is one of the known names
    known_values: dict[int, set] = field(default_factory=dict)  # person -> attributes
    chunk_sets: bool = True
    careless_repeats: bool = False  # predict repeated names (bioS-fullname) uniformly


class Oracle(torch.nn.Module):
    """Bayes-optimal next-token predictions for a dataset's evaluation documents."""

    def __init__(self, dataset, knowledge: Knowledge, documents):
        super().__init__()
        self.ds, self.k, self.tok = dataset, knowledge, dataset.tokenizer
        self.vocab = self.tok.vocab_size
        self.docs = {}
        for doc in documents:
            ids, labels, index = self.tok.encode_pieces(doc.pieces)
            self.docs[tuple(ids)] = self.docs[tuple(ids[:-1])] = (doc, ids, labels, index)
        self.names = self._name_belief()
        self.person_of = {self._name_seq(p): p for p in knowledge.known_names}
        self.bios = dataset.measure_kind == "bios"
        if self.bios:
            self._bios_pools()

    # -- beliefs ---------------------------------------------------------------------------

    def _name_seq(self, person: int) -> Seq:
        first, middle, last = P.name_parts(self.ds.population.name[person])
        ids = self.tok.piece_ids
        return ids(first) + ids(" " + middle) + ids(" " + last)

    def _name_belief(self) -> Mixture:
        """Every name of the dataset's name space (cut pools included) equally likely, save
        the known names, which share ``name_weight``."""
        pools, ids = P.load_pools(), self.tok.piece_ids
        cut = self.ds.manifest["params"].get("name_pool")
        n0 = P.name_space(cut)
        everyone = Product(
            [
                Field([ids(f) for f in pools.first[:cut]]),
                Field([ids(" " + m) for m in pools.middle[:cut]]),
                Field([ids(" " + x) for x in pools.last[:cut]]),
            ]
        )
        known = self.k.known_names
        w, n_known = self.k.name_weight, len(known)
        if not known:
            return Mixture([(1.0, everyone)])
        listed = Product([Field([self._name_seq(p) for p in known])])
        # P(a known name) = w / K; P(another name) = rest, uniform over the N0 - K others
        rest = (1 - w) / (n0 - n_known)
        return Mixture([(rest * n0, everyone), (w - rest * n_known, listed)])

    def _bios_pools(self) -> None:
        pools, ids = P.load_pools(), self.tok.piece_ids
        dates = [
            P.format_date(m, d, y)
            for m in range(P.N_MONTHS)
            for d in range(P.N_DAYS)
            for y in range(P.N_YEARS)
        ]
        self.pool = {
            2: [ids(" " + v) for v in dates],
            3: [ids(" " + v) for v in pools.cities],
            4: [ids(" " + v) for v in pools.universities],
            5: [ids(" " + v) for v in pools.majors],
            6: [ids(" " + v) for v in pools.companies],
        }
        self.hq = [ids(" " + v) for v in pools.company_hq]
        self.uniform = {label: uniform(seqs) for label, seqs in self.pool.items()}

    # -- forward ---------------------------------------------------------------------------

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        eos = self.tok.eos_id
        out = np.full((*batch.shape, self.vocab), NEG, dtype=np.float64)
        for r, row in enumerate(batch.tolist()):
            ids = row[1:]
            while ids and ids[-1] == eos:
                ids.pop()
            doc, ids, labels, index = self.docs[tuple(ids)]  # the row may lack the last token
            out[r] = self._document(doc, ids, labels, index, len(row))[: len(row)]
        return torch.from_numpy(out).float()

    def _document(self, doc, ids, labels, index, width) -> np.ndarray:
        logits = np.full((max(width, len(ids) + 1), self.vocab), NEG)
        logits[np.arange(len(ids)), ids] = 0.0  # template text: one-hot (never scored)
        logits[len(ids) :, self.tok.eos_id] = 0.0
        state = _State(person=None)
        seen: set[tuple[int, int]] = set()
        t = 0
        while t < len(ids):
            key = (labels[t], index[t])
            if key[0] == 0 or key in seen:
                if key[0] == NAME and self.k.careless_repeats:
                    logits[t] = 0.0  # uniform over the vocabulary
                t += 1
                continue
            seen.add(key)
            stop = t
            while stop < len(ids) and (labels[stop], index[stop]) == key:
                stop += 1
            if key[0] == GENDER:
                logits[t] = self._gender_logits(doc, state)
            else:
                belief = self._belief(key, state)
                for i in range(t, stop + 1):  # the value's tokens, then stop-or-continue
                    nxt, end = belief.next_distribution(tuple(ids[t:i]))
                    logits[i] = NEG
                    for x, p in nxt.items():
                        logits[i, x] = np.log(p)
                    if end > 0:
                        logits[i, self.tok.eos_id] = np.log(end)
                self._read(key, tuple(ids[t:stop]), state)
            t = stop
        return logits

    def _gender_logits(self, doc, state: _State) -> np.ndarray:
        text = next(p[0] for p in doc.pieces if p[1] == GENDER)
        space, capital = text[: len(text) - len(text.lstrip())], text.strip()[0].isupper()
        p_gender = state.gender_belief()
        row = np.full(self.vocab, NEG)
        for g in (0, 1):
            forms = PRONOUN_FORMS[(capital, g)]
            for w in forms:
                (tid,) = self.tok.piece_ids(space + w)
                if p_gender[g] > 0:
                    row[tid] = np.log(p_gender[g] / len(forms))
        return row

    def _belief(self, key: tuple[int, int], state: _State) -> Mixture:
        label, j = key
        if label == NAME:
            return self.names
        if self.bios:
            return self._bios_belief(label, state)
        return self._biod_belief(label - VALUE_BASE, j, state)

    def _bios_belief(self, label: int, state: _State) -> Mixture:
        pop, person = self.ds.population, state.person
        knows = state.knows
        if label in (6, 7):  # employer and work city: one coupled belief over the employer
            companies = state.employers
            if label == 6:
                return uniform([self.pool[6][e] for e in companies])
            weights = defaultdict(float)
            for e in companies:
                weights[self.hq[e]] += 1.0
            return Mixture([(1.0, Product([Field(list(weights), list(weights.values()))]))])
        attr = {2: "birth_date", 3: "birth_city", 4: "university", 5: "major"}[label]
        if knows(attr):
            column = {2: pop.date, 3: pop.city, 4: pop.university, 5: pop.major}[label]
            return point(self.pool[label][int(column[person])])
        return self.uniform[label]

    def _biod_belief(self, a: int, j: int, state: _State) -> Mixture:
        pop, ids = self.ds.population, self.tok.piece_ids
        chunks = [ids(" " + pop.chunk_text(a, c)) for c in range(pop.params.d)]
        if state.knows(a):
            return point(chunks[int(pop.values[state.person, a, j])])
        if self.k.chunk_sets:
            return uniform(chunks)
        t = pop.params.t
        first = Field([ids(" " + symbol(s)) for s in range(t)])
        rest = [Field([ids(symbol(s)) for s in range(t)]) for _ in range(pop.params.l - 1)]
        return Mixture([(1.0, Product([first, *rest]))])

    def _read(self, key: tuple[int, int], value: Seq, state: _State) -> None:
        """Condition the belief on a value the document has shown."""
        label = key[0]
        if label == NAME:
            person = self.person_of.get(value)
            state.person = person
            state.known = self.k.known_values.get(person, set()) if person is not None else set()
            pop = self.ds.population
            state.true_gender = int(pop.gender[person]) if self.bios and person is not None else 0
            employers = range(P.N_COMPANIES)
            if self.bios and state.knows("employer"):
                employers = [int(pop.employer[person])]
            state.employers = list(employers)
        elif self.bios and label == 6:
            state.employers = [e for e in state.employers if self.pool[6][e] == value]
        elif self.bios and label == 7:
            state.employers = [e for e in state.employers if self.hq[e] == value]


@dataclass
class _State:
    """What the oracle has read of the current document."""

    person: int | None
    known: set = field(default_factory=set)
    true_gender: int = 0
    employers: list[int] = field(default_factory=list)

    def knows(self, attribute) -> bool:
        return self.person is not None and attribute in self.known

    def gender_belief(self) -> tuple[float, float]:
        if self.knows("gender"):
            return (1.0, 0.0) if self.true_gender == 0 else (0.0, 1.0)
        return (0.5, 0.5)


def every_attribute(dataset) -> set:
    """All attributes of a dataset, as `Knowledge.known_values` names them."""
    if dataset.measure_kind == "bios":
        return {"birth_date", "birth_city", "university", "major", "employer", "gender"}
    return set(range(dataset.manifest["params"]["k"]))


def knowing(dataset, people: Sequence[int], attributes: set, name_weight: float) -> Knowledge:
    """An oracle that knows the names of ``people`` (prior weight ``name_weight``) and, for each
    of them, ``attributes``."""
    people = [int(p) for p in people]
    return Knowledge(
        known_names=people,
        name_weight=name_weight,
        known_values={p: set(attributes) for p in people},
    )


__all__ = ["Knowledge", "Oracle", "every_attribute", "knowing"]
