"""The vectorised stream (gathers over pre-tokenised pieces) yields exactly the windows of the
per-document stream, its reference, on every family: ids, people, labels and source, realised
counts and window counts, over several exposures, and resumed from mid-exposure states written
by either path. bioR (free text) and random strings keep their own paths: checked unchanged."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
from tests.golden import TemplateRewriter

from kcap.data.bior import build_bior
from kcap.data.bios import BioSPopulation, BioSSource, build_bios
from kcap.data.build import write_dataset
from kcap.data.dataset import load_dataset
from kcap.data.junk import build_junk, junk_source
from kcap.data.piece_rows import piece_rows
from kcap.tokenization.factory import ENDLESS, make_stream
from kcap.tokenization.gather import PieceTokens
from kcap.tokenization.stream import ExposureStream

#: Documents per rendered block in these tests: small, so that states fall mid-exposure.
BLOCK = 7


def _windows(stream, limit: int | None = None) -> list[tuple]:
    return [
        (w.ids.copy(), w.people.copy(), w.labels.copy(), w.source)
        for w in itertools.islice(stream, limit)
    ]


def _assert_same(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        for name, x, y in zip(("ids", "people", "labels", "source"), a, b, strict=True):
            assert np.array_equal(x, y), f"window {k}: {name} differ"


def _check_exposure_stream(make) -> None:
    """``make(vectorised, state)`` streams agree in full, in counts, and resumed mid-exposure
    from states written by either path, into either path."""
    fast, ref = make(True, None), make(False, None)
    assert fast.vectorised_path and not ref.vectorised_path
    assert fast.count_windows() == ref.count_windows()
    want = _windows(ref)
    _assert_same(_windows(fast), want)
    assert np.array_equal(fast.counts, ref.counts) and (fast.counts == fast.exposures).all()
    assert len(want) == ref.count_windows()
    mid = 0
    for k in (1, len(want) // 3, len(want) // 2 + 1, len(want) - 2):
        for writer, reader in itertools.product((True, False), repeat=2):
            stream = make(writer, None)
            _windows(stream, k)
            state = copy.deepcopy(stream.state_dict())
            mid += state["position"] > 0 and state["exposure"] > 0
            _assert_same(_windows(make(reader, state)), want[k:])
    assert mid, "no resume point fell inside an exposure after the first"


def _stream_of(source, tok, exposures=3, window=40, seed=1, block=BLOCK):
    def make(fast, state):
        stream = ExposureStream(
            source, tok, exposures=exposures, seed=seed, window=window, block=block, vectorised=fast
        )
        if state is not None:
            stream.load_state_dict(state)
        return stream

    return make


@pytest.mark.parametrize(
    ("variant", "eval_"),
    [("online", False), ("simple", False), ("fullname", False), ("fullname", True)],
)
def test_bios_every_variant(bios_ds, variant, eval_):
    source = BioSSource(bios_ds.population, variant, seed=2, eval_=eval_)
    _check_exposure_stream(_stream_of(source, bios_ds.tokenizer))


def test_bios_word_tokenizer(tmp_path):
    write_dataset(tmp_path / "w", *build_bios(20, seed=2, vocab=500, tokenizer="word"), force=False)
    ds = load_dataset(tmp_path / "w")
    _check_exposure_stream(_stream_of(ds.source(), ds.tokenizer, window=24))


def test_biod(biod_ds):
    _check_exposure_stream(_stream_of(biod_ds.source(), biod_ds.tokenizer))


@pytest.fixture(scope="module")
def mixtures(junk_dirs, tmp_path_factory):
    """bioS mixtures (random junk, useful marked; repetitive junk, junk marked) and bioD ones
    (random junk, junk marked; repetitive junk, unmarked)."""
    root = tmp_path_factory.mktemp("gather-junk")
    biod = {"seed": 5, "useful": "biod", "vocab": 400, "k": 3, "c": 2, "d": 16, "l": 2, "t": 10}
    built = {
        "biod-random": build_junk(20, 2, "random", domain="junk", **biod),
        "biod-repetitive": build_junk(20, 1, "repetitive", junk_n=6, **biod),
    }
    for name, b in built.items():
        write_dataset(root / name, *b, force=False)
    dirs = {f"bios-{k}": v for k, v in junk_dirs.items()} | {k: root / k for k in built}
    return {name: load_dataset(path) for name, path in dirs.items()}


@pytest.mark.parametrize(
    "name", ["bios-random", "bios-repetitive", "biod-random", "biod-repetitive"]
)
def test_junk_mixtures(mixtures, name):
    ds = mixtures[name]

    def make(fast, state=None):
        stream = make_stream(ds, exposures=2, seed=3, window=32, vectorised=fast)
        stream.useful.block = stream.junk.block = BLOCK
        if state is not None:
            stream.load_state_dict(state)
        return stream

    fast, ref = make(True), make(False)
    assert fast.useful.vectorised_path and fast.junk.vectorised_path
    assert not (ref.useful.vectorised_path or ref.junk.vectorised_path)
    want = _windows(ref)
    _assert_same(_windows(fast), want)
    assert np.array_equal(fast.counts, ref.counts) and fast.stats() == ref.stats()
    assert fast.count_windows() == ref.count_windows() == len(want)
    for k in (3, len(want) // 2, len(want) - 1):
        for writer, reader in itertools.product((True, False), repeat=2):
            stream = make(writer)
            _windows(stream, k)
            _assert_same(_windows(make(reader, copy.deepcopy(stream.state_dict()))), want[k:])
    # the junk alone, over whole junk blocks, and its dry-pass length (from rows vs documents)
    junk = _stream_of(junk_source(ds), ds.tokenizer, exposures=2, seed=3, block=4)
    _check_exposure_stream(junk)


def test_endless_junk_streams_agree_far_out(mixtures):
    """Junk block 10**6 (person ids past a million) renders the same on both paths."""
    ds = mixtures["bios-random"]
    streams = [
        ExposureStream(junk_source(ds), ds.tokenizer, exposures=ENDLESS, seed=0, vectorised=fast)
        for fast in (True, False)
    ]
    for s in streams:
        s.load_state_dict({**s.state_dict(), "exposure": 10**6, "started": True})
    a, b = (_windows(s, 40) for s in streams)
    _assert_same(a, b)
    assert a[0][1].max() >= 10**6 * 512


def test_bior_keeps_the_per_document_path(tmp_path):
    people = BioSPopulation.sample(6, 7)
    built = build_bior(
        6, None, 7, rewrites=2, max_tries=3, vocab=500, rewriter=TemplateRewriter(people)
    )
    write_dataset(tmp_path / "r", *built, force=False)
    ds = load_dataset(tmp_path / "r")
    assert piece_rows(ds.source()) is None
    fast, ref = (
        make_stream(ds, exposures=3, seed=1, window=32, vectorised=f) for f in (True, False)
    )
    assert not fast.vectorised_path
    _assert_same(_windows(fast), _windows(ref))


def test_random_strings_unchanged(random_dir):
    ds = load_dataset(random_dir)
    fast, ref = (
        make_stream(ds, exposures=2, seed=1, window=16, vectorised=f) for f in (True, False)
    )
    _assert_same(_windows(fast), _windows(ref))


def test_unknown_sources_fall_back(bios_ds):
    """Only the exact source types have rows: a subclass may render differently."""

    class Shouting(BioSSource):
        def documents(self, exposure, people):
            for doc in super().documents(exposure, people):
                yield type(doc)(doc.person, [(t.upper(), lab, i) for t, lab, i in doc.pieces])

    source = Shouting(bios_ds.population, "online", seed=2)
    assert piece_rows(source) is None
    stream = ExposureStream(source, bios_ds.tokenizer, exposures=1, seed=1, window=40)
    assert not stream.vectorised_path


def test_rows_are_the_documents_pieces(bios_ds, biod_ds):
    """Row by row, the table's (text, label) are the rendered documents' pieces; the gathered
    tokens are their `encode_pieces`, each document closed by eos."""
    for ds in (bios_ds, biod_ds):
        source, tok = ds.source(), ds.tokenizer
        rows = piece_rows(source)
        people = np.array([5, 0, 3, 3, ds.n - 1])
        persons, matrix = rows.rows(2, people)
        assert persons.tolist() == people.tolist()
        docs = list(source.documents(2, people))
        for row, doc in zip(matrix, docs, strict=True):
            got = [rows.table[i] for i in row.tolist() if i >= 0]
            assert got == [(t, lab) for t, lab, _ in doc.pieces]
        ids, who, labels = PieceTokens(rows.table, tok).render(persons, matrix)
        want_ids, want_labels, want_who = [], [], []
        for doc in docs:
            i, lab, _ = tok.encode_pieces(doc.pieces)
            want_ids += [*i, tok.eos_id]
            want_labels += [*lab, -1]
            want_who += [doc.person] * len(i) + [-1]
        assert ids.tolist() == want_ids
        assert labels.tolist() == want_labels and who.tolist() == want_who
        persons, matrix = rows.rows(2, people[:0])
        assert len(persons) == len(matrix) == 0
        assert all(len(a) == 0 for a in PieceTokens(rows.table, tok).render(persons, matrix))
