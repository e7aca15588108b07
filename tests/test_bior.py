"""bioR: rejection keeps exactly the rewrites holding every value, stored spans slice back to the
values, rewrites train like bioS and evaluate on a held-out rewrite; an HF LM plugs in."""

import json
import math

import numpy as np
import pytest

from kcap.data import pools as P
from kcap.data.bior import (
    REWRITES,
    Rewrites,
    build_bior,
    find_spans,
    generate_rewrites,
    make_prompt,
    rewrite_text,
)
from kcap.data.bios import BioSPopulation, bios_bits
from kcap.data.build import write_dataset
from kcap.data.dataset import load_dataset
from kcap.data.documents import GENDER, NAME, label_name
from kcap.data.templates import ATTRIBUTES
from kcap.tokenization.tokenizer import KTokenizer

NAME_ = "Anya Briar Forger"
VALUES = (
    "October 2, 1996",
    "Princeton, NJ",
    "Massachusetts Institute of Technology",
    "Communications",
    "Meta Platforms",
    "Menlo Park, CA",
)
SHE = 1

GOOD = [
    # every value verbatim, whole words; different orders, punctuation and possessives
    "Anya Briar Forger was born on October 2, 1996, in Princeton, NJ. She studied Communications "
    "at Massachusetts Institute of Technology, then worked for Meta Platforms in Menlo Park, CA.",
    "Anya Briar Forger's career at Meta Platforms (Menlo Park, CA) followed her degree in "
    "Communications from Massachusetts Institute of Technology. Born October 2, 1996 in "
    "Princeton, NJ, she loves sailing.",
    "Anya Briar Forger, a Massachusetts Institute of Technology graduate in Communications, "
    '"Meta Platforms" employee in Menlo Park, CA; born in Princeton, NJ on October 2, 1996.',
    # no gendered pronoun at all: kept, the gender is simply not stated
    "Anya Briar Forger: October 2, 1996; Princeton, NJ; Massachusetts Institute of Technology; "
    "Communications; Meta Platforms; Menlo Park, CA.",
]
BAD = [
    # a value missing (no work city)
    "Anya Briar Forger was born on October 2, 1996 in Princeton, NJ. She studied Communications "
    "at Massachusetts Institute of Technology and worked for Meta Platforms.",
    # a value paraphrased, not verbatim
    "Anya Briar Forger was born on October 2nd, 1996 in Princeton, NJ. She studied Communications "
    "at Massachusetts Institute of Technology and worked for Meta Platforms in Menlo Park, CA.",
    # a value only inside a longer word
    "Anya Briar Forger was born on October 2, 1996 in Princeton, NJ. She studied Communicationsx "
    "at Massachusetts Institute of Technology and worked for Meta Platforms in Menlo Park, CA.",
    # wrong case
    "Anya Briar Forger was born on october 2, 1996 in Princeton, NJ. She studied Communications "
    "at Massachusetts Institute of Technology and worked for Meta Platforms in Menlo Park, CA.",
    # does not start with the full name
    "Born on October 2, 1996, Anya Briar Forger grew up in Princeton, NJ. She studied "
    "Communications at Massachusetts Institute of Technology; Meta Platforms, Menlo Park, CA.",
    # the name runs into another word
    "Anya Briar Forgerson was born on October 2, 1996 in Princeton, NJ. She studied Communications "
    "at Massachusetts Institute of Technology and worked for Meta Platforms in Menlo Park, CA.",
    # the first pronoun contradicts the person's gender
    "Anya Briar Forger was born on October 2, 1996 in Princeton, NJ. He studied Communications "
    "at Massachusetts Institute of Technology and worked for Meta Platforms in Menlo Park, CA.",
]


def _check_spans(text, spans, values=VALUES, name=NAME_):
    by_label = {s.label: s for s in spans}
    assert text[by_label[NAME].start : by_label[NAME].end] == name and by_label[NAME].start == 0
    for a, value in enumerate(values):
        if 2 + a in by_label:
            s = by_label[2 + a]
            assert text[s.start : s.end] == value, label_name(s.label)
    if GENDER in by_label:
        assert text[by_label[GENDER].start : by_label[GENDER].end].lower() in {"she", "her"}


def test_rejection_keeps_exactly_the_rewrites_with_every_value():
    kept = [t for t in GOOD + BAD if find_spans(t, NAME_, VALUES, SHE) is not None]
    assert kept == GOOD
    for text in GOOD:
        spans = find_spans(text, NAME_, VALUES, SHE)
        _check_spans(text, spans)
        assert {s.label for s in spans} >= {NAME, *range(2, 8)}  # name and all six values
    assert GENDER not in {s.label for s in find_spans(GOOD[3], NAME_, VALUES, SHE)}
    assert find_spans(GOOD[0], NAME_, VALUES, 0) is None  # "She" for a man


def test_values_inside_other_values_and_shared_values():
    # the major "Design" also occurs inside the university's name: it needs its own occurrence
    values = (
        "May 1, 1990",
        "Providence, RI",
        "Rhode Island School of Design",
        "Design",
        "Apple",
        "Providence, RI",
    )
    inside = (
        "Anya Briar Forger was born on May 1, 1990 in Providence, RI and attended Rhode "
        "Island School of Design. She works for Apple."
    )
    assert find_spans(inside, NAME_, values, SHE) is None
    own = inside.replace("attended", "studied Design at")
    spans = find_spans(own, NAME_, values, SHE)
    _check_spans(own, spans, values)
    # the work city equals the birth city: one mention covers both; only one span holds it
    assert sum(1 for s in spans if own[s.start : s.end] == "Providence, RI") == 1


def test_stored_documents_slice_back_and_tokenize_piecewise():
    toks = [
        KTokenizer.train(GOOD * 5, vocab_size=400, kind="bpe"),
        KTokenizer.train(GOOD * 5, vocab_size=400, kind="word"),
    ]
    for text in GOOD:
        spans = find_spans(text, NAME_, VALUES, SHE)
        from kcap.data.documents import from_spans

        doc = from_spans(0, text, spans)
        assert doc.text == text
        assert doc.spans() == spans  # the pieces give back exactly the stored spans
        for tok in toks:  # piece boundaries are pre-tokenizer boundaries
            assert tok.encode_pieces(doc.pieces)[0] == tok.encode(text)[0]


class Scripted:
    """A stand-in LM: reads the name at the end of the prompt and writes, per person, a cycle
    of good and bad continuations; person 0 only ever writes bad ones."""

    def __init__(self, people):
        self.people = people
        self.by_name = {people.full_name(i): i for i in range(people.n)}
        self.calls = {i: 0 for i in range(people.n)}
        self.seeds = []

    def __call__(self, prompts, seed):
        self.seeds.append(seed)
        out = []
        for prompt in prompts:
            i = self.by_name[prompt.rsplit("Biography: ", 1)[1]]
            k = self.calls[i]
            self.calls[i] += 1
            v = self.people.values(i)
            pron = "She" if self.people.gender[i] else "He"
            good = (
                f" was born on {v[0]} in {v[1]}. {pron} studied {v[3]} at {v[2]} (try {k}). "
                f"{pron} worked for {v[4]} in {v[5]}.\n\nWrite another one."
            )
            bad = f" was born in {v[1]}. {pron} worked for {v[4]} (try {k})."
            out.append(bad if i == 0 or k % 3 == 2 else good)
        return out


@pytest.fixture(scope="module")
def people():
    return BioSPopulation.sample(6, 11)


def test_generation_keeps_accepted_holds_one_out_and_falls_back(people):
    store, stats = generate_rewrites(
        people, Scripted(people), rewrites=4, max_tries=9, seed=2, batch_size=4
    )
    assert store.n == 6
    assert store.fallback.tolist() == [True] + [False] * 5
    assert stats.fallback_people == 1
    assert stats.tries == 9 + 5 * 7  # person 0 used all 9 tries; the others 7 (5 kept, 2 bad)
    assert stats.accepted == 5 * 5
    for p in range(6):
        first, last = int(store.person_offsets[p]), int(store.person_offsets[p + 1])
        assert last - first == 5  # one held out + 4 training texts
        assert store.count(p) == 4
        for i in range(first, last):
            text = store.texts[i]
            assert text.startswith(people.full_name(p))
            doc = store.document(i, p)
            assert doc.text == text
            values = dict(zip(ATTRIBUTES, people.values(p), strict=True))
            labels = set()
            for s in doc.spans():
                labels.add(s.label)
                if s.label == NAME:
                    assert text[s.start : s.end] == people.full_name(p)
                elif s.label != GENDER:
                    assert text[s.start : s.end] == values[label_name(s.label)]
            assert labels >= {NAME, *range(2, 8)}
            if p > 0:
                assert f"(try {[0, 1, 3, 4, 6][i - first]})" in text  # kept in order
                assert "Write another" not in text  # only the first paragraph is kept
    # the fallback person has bioS template texts
    assert "(try" not in store.texts[int(store.person_offsets[0])]


def test_generation_is_deterministic(people):
    a, _ = generate_rewrites(people, Scripted(people), rewrites=2, seed=5)
    b, _ = generate_rewrites(people, Scripted(people), rewrites=2, seed=5)
    assert a.texts == b.texts and np.array_equal(a.spans, b.spans)
    r = Scripted(people)
    generate_rewrites(people, r, rewrites=2, seed=5, batch_size=2)
    assert len(set(r.seeds)) > 1


def test_prompt_carries_the_six_facts_and_opens_with_the_name(people):
    v = people.values(1)
    prompt = make_prompt(people.full_name(1), v, int(people.gender[1]), np.random.default_rng(0))
    assert all(value in prompt for value in v)
    assert prompt.endswith(f"\n\nBiography: {people.full_name(1)}")
    assert rewrite_text("A B C", " was\nborn  here.\n\nNext") == "A B C was born here."


@pytest.fixture(scope="module")
def bior_dir(tmp_path_factory, people):
    out = tmp_path_factory.mktemp("bior") / "ds"
    built = build_bior(6, None, 11, rewrites=4, max_tries=9, vocab=500, rewriter=Scripted(people))
    write_dataset(out, *built, force=False)
    return out


def test_dataset_round_trip_and_sources(bior_dir, people):
    ds = load_dataset(bior_dir)
    assert ds.kind == "bior" and ds.measure_kind == "bios" and ds.n == 6
    assert ds.manifest["bits"]["total"] == pytest.approx(bios_bits(6)["total"])
    assert ds.manifest["rewriting"]["fallback_people"] == 1
    assert np.array_equal(ds.population.name, people.name)
    train, evaluation = ds.source(), ds.source(eval_=True)
    every = np.arange(6)
    held_out = [d.text for d in evaluation.documents(0, every)]
    assert held_out == [
        ds.extras[REWRITES].texts[int(i)] for i in ds.extras[REWRITES].person_offsets[:-1]
    ]
    assert [d.text for d in evaluation.documents(7, every)] == held_out  # fixed
    # exposures cycle through each person's 4 training rewrites, never the held-out one
    seen = {p: [] for p in range(6)}
    for e in range(8):
        for d in train.documents(e, every):
            seen[d.person].append(d.text)
    for p in range(6):
        assert held_out[p] not in seen[p]
        assert len(set(seen[p])) == 4 and all(seen[p].count(t) == 2 for t in set(seen[p]))
    # stored spans slice back to the values
    store = Rewrites.load(bior_dir / "rewrites.npz")
    assert store.texts == ds.extras[REWRITES].texts
    for i, text in enumerate(store.texts):
        for k, (s, e) in enumerate(store.spans[i].tolist()):
            if s >= 0 and k + 1 not in (NAME, GENDER):
                assert text[s:e] in people.values(
                    np.searchsorted(store.person_offsets, i, "right") - 1
                )


def test_bior_trains_and_measures_like_bios(tmp_path, bior_dir):
    from kcap.training.config import parse_config
    from kcap.training.trainer import Trainer

    cfg = parse_config(
        {
            "dataset": {"path": str(bior_dir)},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
            "training": {"exposures": 4, "batch_size": 2, "window": 64, "threads": 1},
        }
    )
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    r = trainer.fit()
    # measured with the bioS bound (SPEC §4) on all 6 people's held-out rewrites: catches bioR
    # measured with another bound, on a subset, or against the wrong P or data bits
    assert r.kind == "bior" and r.p3 is None and (r.n_people, r.n_measured) == (6, 6)
    assert trainer.summary()["params"]["P"] == r.P
    assert r.R_max == pytest.approx(bios_bits(6)["total"] / r.P, rel=1e-12)
    raw = r.bits_unclipped
    assert raw["name"] == pytest.approx(6 * (math.log2(P.N0) - r.p1 / math.log(2)), rel=1e-12)
    assert raw["value"] == pytest.approx(6 * (math.log2(P.S0) - r.p2 / math.log(2)), rel=1e-12)
    assert raw["diversity"] == 0.0
    # 4 exposures of a 1-layer d=32 model store nothing: it is hundreds of bits below the pools'
    # prior on names and thousands on values, so both terms clip and R is exactly 0 (catches
    # bits leaking from evaluating on a training rewrite, or unclipped terms)
    assert raw["name"] < -100 and raw["value"] < -1000
    assert r.clipped == ["name", "value"] and r.bits["total"] == 0.0 and r.R == 0.0
    assert set(r.loss_per_attribute) >= {"birth_date", "gender"}
    assert trainer.summary()["exposures"] == {"target": 4, "min": 4, "max": 4}


@pytest.fixture(scope="module")
def tiny_hf_lm(tmp_path_factory):
    """A tiny randomly initialised GPT-2 and its tokenizer, saved as a local HF directory."""
    transformers = pytest.importorskip("transformers")
    import torch

    from kcap.data.build import pool_texts

    transformers.logging.set_verbosity_error()
    out = tmp_path_factory.mktemp("lm")
    base = KTokenizer.train([*pool_texts(names=True), "Biography: was born in"], vocab_size=400)
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=base.hf, eos_token="<|eos|>", pad_token="<|eos|>"
    )
    tok.save_pretrained(out)
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=len(tok),
        n_positions=512,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(out)
    return out


def test_hf_plumbing_through_the_cli(tmp_path, tiny_hf_lm):
    from typer.testing import CliRunner

    from kcap.cli.main import app

    out = tmp_path / "ds"
    r = CliRunner().invoke(
        app,
        [
            "data",
            "bior",
            "--n",
            "3",
            "--model",
            str(tiny_hf_lm),
            "--rewrites",
            "2",
            "--max-new-tokens",
            "12",
            "--batch-size",
            "4",
            "--vocab",
            "500",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "bior" and manifest["params"]["model"] == str(tiny_hf_lm)
    rw = manifest["rewriting"]
    assert rw["tries"] == 3 * 4 * 3  # a random LM writes nothing acceptable: every try is used
    assert rw["accepted"] == 0 and rw["fallback_people"] == 3
    ds = load_dataset(out)
    assert ds.extras[REWRITES].n == 3 and all(ds.extras[REWRITES].count(p) == 2 for p in range(3))


def test_cli_refuses_a_missing_model(tmp_path):
    from typer.testing import CliRunner

    from kcap.cli.main import app

    out = tmp_path / "ds"
    r = CliRunner().invoke(
        app, ["data", "bior", "--n", "3", "--model", str(tmp_path / "nope"), "--out", str(out)]
    )
    assert r.exit_code == 2 and "--model" in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists()
