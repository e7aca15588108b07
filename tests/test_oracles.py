"""Every rule of the knowledge measure against adversarial oracles (SPEC §4).

Each oracle (`tests/oracles.py`) is a generator that knows a chosen part of the data and nothing
else; its probability of every value is known in closed form, so the real measure must report
exactly the bits it holds: no more (a bound that credits bits a model does not hold is wrong),
and no less. Figures are compared in bits per person.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from tests.oracles import Knowledge, Oracle, every_attribute, knowing

from kcap.data import pools as P
from kcap.data.biod import BioDParams, build_biod
from kcap.data.bios import build_bios
from kcap.data.build import write_dataset
from kcap.data.dataset import load_dataset
from kcap.data.documents import GENDER, NAME, Span, from_spans
from kcap.measure import measure
from kcap.measure.knowledge import BIOS_POOL_SIZES, ValueEndings, gender_probe

TOL = 1e-3  # bits per person: float32 logits, exact arithmetic otherwise
LOG2E = 1 / math.log(2)


def _dataset(tmp_path_factory, name, built):
    out = tmp_path_factory.mktemp(name) / "ds"
    write_dataset(out, *built, force=False)
    return load_dataset(out)


@pytest.fixture(scope="module")
def bios(tmp_path_factory):
    return _dataset(tmp_path_factory, "oracle-bios", build_bios(120, seed=11, vocab=600))


@pytest.fixture(scope="module")
def fullname(tmp_path_factory):
    built = build_bios(60, seed=12, variant="fullname", vocab=600)
    return _dataset(tmp_path_factory, "oracle-fullname", built)


@pytest.fixture(scope="module")
def biod(tmp_path_factory):
    built = build_biod(BioDParams(60, 3, 2, 6, 3, 8), seed=13, vocab=400)
    return _dataset(tmp_path_factory, "oracle-biod", built)


@pytest.fixture(scope="module")
def biod_pooled(tmp_path_factory):
    """bioD over cut name pools: 5 first, middle and last names, 125 names for 60 people."""
    built = build_biod(BioDParams(60, 3, 2, 6, 3, 8, name_pool=5), seed=14, vocab=400)
    return _dataset(tmp_path_factory, "oracle-biod-pooled", built)


def names_in(ds) -> int:
    """The size of a dataset's name space: N0, or pool³ with cut name pools."""
    return P.name_space(ds.manifest["params"].get("name_pool"))


def score(ds, knowledge: Knowledge):
    docs = list(ds.source(eval_=True).documents(0, np.arange(ds.n)))
    return measure(Oracle(ds, knowledge, docs), ds, P_count=1, batch_size=32)


def name_loss(ds, knowledge: Knowledge) -> float:
    """The oracle's mean -ln P(name), in closed form."""
    k, w = len(knowledge.known_names), knowledge.name_weight
    known = set(knowledge.known_names)
    n0 = names_in(ds)
    per = [-math.log(w / k) if p in known else -math.log((1 - w) / (n0 - k)) for p in range(ds.n)]
    return float(np.mean(per))


def pool_bits(ds, attribute) -> float:
    """log2 of an attribute's pool: what not knowing it costs per person."""
    if ds.measure_kind == "bios":
        return math.log2(BIOS_POOL_SIZES[attribute])
    prm = ds.manifest["params"]
    return prm["c"] * math.log2(prm["d"])


def value_bits(ds, knowledge: Knowledge) -> float:
    """The value term the oracle holds: every known (person, attribute) pair's pool bits."""
    known = knowledge.known_values
    return sum(pool_bits(ds, a) for p in range(ds.n) for a in known.get(p, ()))


def check(m, ds, knowledge: Knowledge):
    n = ds.n
    assert m.p1 == pytest.approx(name_loss(ds, knowledge), abs=TOL)
    name = n * (math.log2(names_in(ds)) - name_loss(ds, knowledge) * LOG2E)
    assert m.bits_unclipped["name"] / n == pytest.approx(name / n, abs=TOL)
    assert m.bits_unclipped["value"] / n == pytest.approx(value_bits(ds, knowledge) / n, abs=TOL)


# ----------------------------------------------------------------------------- bioS


def test_pools_and_maps_only_score_nothing(bios):
    """Knows the pools and the employer -> headquarters map: 0 bits. The work city, when it comes
    first, tells ~6.5 bits of the employer: uncharged, it was credited as knowledge."""
    m = score(bios, Knowledge())
    assert m.p1 == pytest.approx(math.log(P.N0), abs=TOL)
    assert m.p2 == pytest.approx(math.log(P.S0), abs=TOL)
    assert abs(m.bits_unclipped["value"]) / bios.n < TOL
    assert abs(m.bits_unclipped["name"]) / bios.n < TOL


def test_names_only_scores_the_name_term(bios):
    """Knows who the N people are and nothing about them: exactly N·log2(N0/N)."""
    k = knowing(bios, range(bios.n), set(), 1.0)
    m = score(bios, k)
    check(m, bios, k)
    assert m.bits_unclipped["name"] == pytest.approx(bios.bits["name"], abs=TOL * bios.n)


def test_a_chosen_half_scores_half(bios):
    """Knows everything about half of the people: half the value bits, and half the name bits
    less one bit per person (telling a known name from an unknown one costs a bit)."""
    half = np.random.default_rng(0).choice(bios.n, bios.n // 2, replace=False)
    k = knowing(bios, half, every_attribute(bios), 0.5)
    m = score(bios, k)
    check(m, bios, k)
    assert m.bits["value"] == pytest.approx(bios.bits["value"] / 2, rel=1e-5)
    assert m.bits["name"] == pytest.approx(bios.bits["name"] / 2 - bios.n / 2, abs=TOL * bios.n)
    assert m.bits["total"] == pytest.approx(bios.bits["total"] / 2, rel=0.02)


@pytest.mark.parametrize("missing", ["birth_date", "birth_city", "university", "major"])
def test_all_but_one_attribute(bios, missing):
    k = knowing(bios, range(bios.n), every_attribute(bios) - {missing}, 1.0)
    m = score(bios, k)
    check(m, bios, k)
    expected = bios.bits["value"] - bios.n * pool_bits(bios, missing)
    assert m.bits["value"] == pytest.approx(expected, abs=TOL * bios.n)
    assert m.bits_per_attribute[missing] == pytest.approx(0, abs=TOL * bios.n)


@pytest.mark.parametrize("missing", ["employer", "gender"])
def test_all_but_employer_or_gender(bios, missing):
    """Not knowing the employer means not knowing the work city either: the pair is worth
    exactly log2 263 bits in whichever order the sentences put them."""
    test_all_but_one_attribute(bios, missing)


def test_a_perfect_oracle_scores_every_bit(bios):
    m = score(bios, knowing(bios, range(bios.n), every_attribute(bios), 1.0))
    assert m.bits["total"] == pytest.approx(bios.bits["total"], abs=TOL * bios.n)
    assert pytest.approx(m.R_max, rel=1e-5) == m.R


def test_name_ends_are_charged(bios):
    """Some last names are token prefixes of others (" Barr" of " Barrett" in a small BPE
    vocabulary): the pools oracle would be credited bits for them unless stopping is charged."""
    endings = ValueEndings(bios.population, bios.tokenizer, bios=True)
    lasts = [P.name_parts(x)[2] for x in bios.population.name]
    extended = [x for x in lasts if bios.tokenizer.piece_ids(" " + x) in endings.names]
    assert extended, "the fixture must hold a person whose last name other names extend"


# ----------------------------------------------------------------------------- fullname


def test_fullname_charges_the_first_name_and_reads_the_gender(fullname):
    """A model that knows everything but predicts the repeated full names carelessly still holds
    every bit: p1 is the first occurrence; and every evaluation biography states the gender."""
    k = knowing(fullname, range(fullname.n), every_attribute(fullname), 1.0)
    k.careless_repeats = True
    m = score(fullname, k)
    assert m.p1 == pytest.approx(math.log(fullname.n), abs=TOL)
    assert m.bits["total"] == pytest.approx(fullname.bits["total"], abs=TOL * fullname.n)
    assert m.notes and "fullname" in m.notes[0]
    docs = fullname.source(eval_=True).documents(0, np.arange(fullname.n))
    assert all(any(p[1] == GENDER for p in d.pieces) for d in docs)


# ----------------------------------------------------------------------------- bioD


def biod_bits(ds, p1: float, p2: float, p3: float) -> dict[str, float]:
    prm = ds.manifest["params"]
    n, k, c, d, length, t = (prm[x] for x in ("n", "k", "c", "d", "l", "t"))
    return {
        "name": n * (math.log2(names_in(ds)) - p1 * LOG2E),
        "value": n * k * (c * math.log2(d) - p2 * LOG2E),
        "diversity": k * d * (length * math.log2(t) - math.log2(d) - p3 * LOG2E),
    }


def test_biod_chunk_sets_only(biod):
    """Knows the chunk sets, no person: no name or value bits; the diversity term of a model
    that picks a chunk uniformly from each set, K·D·log2(T^L/D²)."""
    m = score(biod, Knowledge())
    prm = biod.manifest["params"]
    d = prm["d"]
    assert m.p2 == pytest.approx(prm["c"] * math.log(d), abs=TOL)
    assert m.p3 == pytest.approx(math.log(d), abs=TOL)
    assert abs(m.bits_unclipped["value"]) / biod.n < TOL
    expected = biod_bits(biod, math.log(P.N0), prm["c"] * math.log(d), math.log(d))
    assert m.bits_unclipped["diversity"] == pytest.approx(expected["diversity"], abs=TOL)
    assert m.bits["diversity"] > 0


def test_biod_alphabet_only(biod):
    """Knows only the alphabet: every chunk costs L·ln T, and no term is positive."""
    m = score(biod, Knowledge(chunk_sets=False))
    prm = biod.manifest["params"]
    chunk = prm["l"] * math.log(prm["t"])
    assert m.p3 == pytest.approx(chunk, abs=TOL)
    expected = biod_bits(biod, math.log(P.N0), prm["c"] * chunk, chunk)
    for term in ("value", "diversity"):
        assert m.bits_unclipped[term] == pytest.approx(expected[term], abs=TOL * biod.n)
        assert m.bits[term] == 0 and term in m.clipped


def test_biod_a_chosen_half(biod):
    half = np.random.default_rng(1).choice(biod.n, biod.n // 2, replace=False)
    k = knowing(biod, half, every_attribute(biod), 0.5)
    m = score(biod, k)
    check(m, biod, k)
    assert m.bits["value"] == pytest.approx(biod.bits["value"] / 2, rel=1e-5)


@pytest.mark.parametrize("missing", [0, 2])
def test_biod_all_but_one_attribute(biod, missing):
    k = knowing(biod, range(biod.n), every_attribute(biod) - {missing}, 1.0)
    m = score(biod, k)
    check(m, biod, k)
    assert m.bits_per_attribute[f"ID {missing + 1}"] == pytest.approx(0, abs=TOL * biod.n)
    prm = biod.manifest["params"]
    p2 = prm["c"] * math.log(prm["d"]) / prm["k"]
    expected = biod_bits(biod, math.log(biod.n), p2, math.log(prm["d"]) / prm["k"])
    assert m.bits["diversity"] == pytest.approx(expected["diversity"], abs=TOL)


def test_biod_cut_name_pools_only_score_nothing(biod_pooled):
    """Knows the cut pools (125 names) and no person: no name bits. Counted against the paper's
    N0 instead, the same model would be credited log2(N0/125) = 20.3 bits per person."""
    ds = biod_pooled
    m = score(ds, Knowledge())
    assert m.p1 == pytest.approx(math.log(125), abs=TOL)
    assert abs(m.bits_unclipped["name"]) / ds.n < TOL
    assert ds.bits["name"] == pytest.approx(ds.n * math.log2(125 / ds.n))
    assert all(max(P.split_name(x)) < 5 for x in ds.population.name.tolist())


def test_biod_cut_name_pools_names_half_and_all(biod_pooled):
    """Who the people are, half of them fully, all of them fully: exactly those parts."""
    ds = biod_pooled
    names = knowing(ds, range(ds.n), set(), 1.0)
    m = score(ds, names)
    check(m, ds, names)
    assert m.bits["name"] == pytest.approx(ds.bits["name"], abs=TOL * ds.n)
    half = np.random.default_rng(2).choice(ds.n, ds.n // 2, replace=False)
    k = knowing(ds, half, every_attribute(ds), 0.5)
    m = score(ds, k)
    check(m, ds, k)
    assert m.bits["value"] == pytest.approx(ds.bits["value"] / 2, rel=1e-5)
    m = score(ds, knowing(ds, range(ds.n), every_attribute(ds), 1.0))
    assert m.bits["total"] == pytest.approx(ds.bits["total"], abs=TOL * ds.n)


# ----------------------------------------------------------------------------- bioR gender


@pytest.mark.parametrize("word", ["herself", "himself", "hers", "HE", "Hers"])
def test_gender_probe_falls_back_outside_the_pronoun_forms(bios, word):
    """A rewrite whose first gendered word is not a template pronoun form crashed the probe
    (StopIteration); its token loss is used instead."""
    name = " ".join(P.name_parts(bios.population.name[0]))
    text = f"{name} taught {word} to paint."
    start = text.index(word)
    doc = from_spans(0, text, [Span(NAME, 0, len(name)), Span(GENDER, start, start + len(word))])
    _, labels, _ = bios.tokenizer.encode_pieces(doc.pieces)
    assert gender_probe(bios.tokenizer, doc, labels) is None


# ----------------------------------------------------------------------------- junk and bioR


@pytest.fixture(scope="module")
def bior(tmp_path_factory):
    from tests.golden import TemplateRewriter

    from kcap.data.bior import build_bior
    from kcap.data.bios import BioSPopulation

    rewriter = TemplateRewriter(BioSPopulation.sample(40, 21))
    built = build_bior(40, None, 21, rewrites=2, max_tries=3, vocab=600, rewriter=rewriter)
    return _dataset(tmp_path_factory, "oracle-bior", built)


@pytest.fixture(scope="module", params=["junk", "bior"])
def other_kind(request, junk_dirs, bior):
    """A junk mixture with the domain token on its useful biographies, and bioR: both are
    measured with the bioS bound, through their own documents."""
    return load_dataset(junk_dirs["random"]) if request.param == "junk" else bior


def test_other_kinds_pools_only_score_nothing(other_kind):
    m = score(other_kind, Knowledge())
    assert abs(m.bits_unclipped["value"]) / other_kind.n < TOL
    assert abs(m.bits_unclipped["name"]) / other_kind.n < TOL


def test_other_kinds_perfect_oracle_scores_every_bit(other_kind):
    ds = other_kind
    m = score(ds, knowing(ds, range(ds.n), every_attribute(ds), 1.0))
    assert (
        m.data_bits
        == pytest.approx(ds.bits["total"])
        == pytest.approx(ds.bits["name"] + ds.bits["value"])
    )
    assert m.bits["total"] == pytest.approx(ds.bits["total"], abs=TOL * ds.n)
