"""The exposure-exact stream: exact counts, window overlap, resume with no replay or skip."""

import copy
import itertools
import random

import numpy as np
import pytest

from kcap.tokenization.stream import PAD, ExposureStream, StreamState


def _stream(ds, exposures=3, window=64, state=None, seed=1):
    return ExposureStream(
        ds.source(), ds.tokenizer, exposures=exposures, seed=seed, window=window, state=state
    )


@pytest.mark.parametrize("fixture", ["bios_ds", "biod_ds"])
def test_every_person_exactly_e_times(fixture, request):
    ds = request.getfixturevalue(fixture)
    stream = _stream(ds, exposures=4)
    windows = list(stream)
    assert (stream.counts == 4).all()
    # reassemble the token stream from the overlapping windows
    tokens = np.concatenate([windows[0].ids] + [w.ids[1:] for w in windows[1:]])
    tokens = tokens[tokens != PAD]
    eos = ds.tokenizer.eos_id
    assert tokens[0] == eos and tokens[-1] == eos
    assert (tokens == eos).sum() == 4 * ds.n + 1  # one eos opens, one closes each document
    # every person's name tokens start exactly 4 documents
    people = np.concatenate([windows[0].people] + [w.people[1:] for w in windows[1:]])
    people = people[: len(tokens)]
    starts = people[1:][tokens[:-1] == eos]
    starts = starts[starts >= 0]
    assert np.bincount(starts, minlength=ds.n).tolist() == [4] * ds.n
    assert len(windows) == _stream(ds, exposures=4).count_windows()


def test_windows_overlap_by_one_token(bios_ds):
    windows = list(_stream(bios_ds, exposures=1, window=32))
    for a, b in itertools.pairwise(windows):
        assert a.ids[-1] == b.ids[0]
        assert len(a.ids) == 33
    assert (windows[-1].ids == PAD).any() or len(windows[-1].ids) == 33


def test_exposure_order_is_a_fresh_permutation(bios_ds):
    stream = _stream(bios_ds)
    p0, p1 = stream.permutation(0), stream.permutation(1)
    assert sorted(p0) == list(range(bios_ds.n)) and not np.array_equal(p0, p1)


def test_resume_at_random_step_yields_identical_remaining_stream(bios_ds):
    full = [w.ids.copy() for w in _stream(bios_ds, window=48)]
    rng = random.Random(0)
    for k in [1, rng.randrange(2, len(full) - 1), len(full) - 1]:
        stream = _stream(bios_ds, window=48)
        for _ in range(k):
            next(stream)
        saved = copy.deepcopy(stream.state.to_dict())
        resumed = _stream(bios_ds, window=48, state=StreamState.from_dict(saved))
        rest = [w.ids for w in resumed]
        assert len(rest) == len(full) - k
        assert all(np.array_equal(a, b) for a, b in zip(rest, full[k:], strict=True))


def test_labels_mark_values(bios_ds):
    w = next(_stream(bios_ds, window=256))
    labels = w.labels[w.ids != PAD]
    assert set(np.unique(labels)) >= {-1, 0, 1, 2, 3, 4, 5, 6, 7, 8}
    assert (w.people[w.labels >= 1] >= 0).all()  # knowledge tokens belong to a person


@pytest.mark.parametrize("variant", ["online", "simple", "fullname"])
def test_length_tables_equal_a_dry_pass(bios_ds, variant):
    """The exact run length from lookup tables equals rendering and tokenizing every document."""
    from kcap.data.bios import BioSSource

    source = BioSSource(bios_ds.population, variant, seed=2)
    tok = bios_ds.tokenizer
    for e in (0, 3):
        docs = source.documents(e, np.arange(bios_ds.n))
        expected = [len(tok.encode_pieces(d.pieces)[0]) for d in docs]
        assert source.token_lengths(tok, e).tolist() == expected
    stream = ExposureStream(source, tok, exposures=3, seed=1, window=64)
    assert stream.count_windows() == len(
        list(ExposureStream(source, tok, exposures=3, seed=1, window=64))
    )


def test_biod_length_tables_equal_a_dry_pass(biod_ds):
    source, tok = biod_ds.source(), biod_ds.tokenizer
    for e in (0, 2):
        docs = source.documents(e, np.arange(biod_ds.n))
        expected = [len(tok.encode_pieces(d.pieces)[0]) for d in docs]
        assert source.token_lengths(tok, e).tolist() == expected


def test_domain_token_source_lengths_equal_a_dry_pass(tmp_path):
    from kcap.data.build import write_dataset
    from kcap.data.dataset import load_dataset
    from kcap.data.junk import build_junk

    out = tmp_path / "junk"
    write_dataset(out, *build_junk(30, 3, "random", 0, domain="useful", vocab=500), force=False)
    ds = load_dataset(out)
    source, tok = ds.source(), ds.tokenizer
    assert hasattr(source, "token_lengths")
    docs = source.documents(1, np.arange(ds.n))
    assert source.token_lengths(tok, 1).tolist() == [
        len(tok.encode_pieces(d.pieces)[0]) for d in docs
    ]
