"""Junk mixtures: exact token ratio, pure windows, junk people never useful nor repeated, useful
exposures exact, domain-token placement in training and measurement, exact resume -- for useful
bioS and useful bioD (the same people and bits as the plain bioD dataset, the bioD bound); the
``useful`` config field, its run names and unchanged hashes; ``kcap data junk --useful biod``."""

import copy
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from kcap.data import pools as P
from kcap.data.biod import BioDPopulation, biod_bits
from kcap.data.bios import TAG_JUNK_ORDER, bios_bits
from kcap.data.build import write_dataset
from kcap.data.dataset import load_dataset
from kcap.data.junk import (
    DOMAIN_TOKEN,
    JUNK_POPULATION,
    JUNK_TOKEN,
    JunkNames,
    RandomBioDJunkSource,
    RandomJunkSource,
    build_junk,
    feistel_permute,
    junk_source,
    nth_unexcluded,
)
from kcap.errors import KcapError
from kcap.measure import measure
from kcap.tokenization.factory import ENDLESS, make_stream
from kcap.tokenization.mixture import MixtureStream
from kcap.tokenization.stream import JUNK, PAD, USEFUL, ExposureStream


@pytest.fixture(scope="module")
def random_junk(junk_dirs):
    return load_dataset(junk_dirs["random"])


@pytest.fixture(scope="module")
def repetitive_junk(junk_dirs):
    return load_dataset(junk_dirs["repetitive"])


#: The bioD parameters of conftest's ``biod_ds`` (bioD(30, 3, 2, 16, 2, 10), seed 5).
BIOD = {"k": 3, "c": 2, "d": 16, "l": 2, "t": 10}


@pytest.fixture(scope="module")
def biod_junk_dirs(tmp_path_factory):
    """Useful bioD mixtures like ``junk_dirs``: random junk with the domain token (r = 3), and
    repetitive junk of 12 people with the junk token (r = 1)."""
    root = tmp_path_factory.mktemp("biod-junk")
    common = {"seed": 5, "useful": "biod", "vocab": 400, **BIOD}
    built = {
        "random": build_junk(30, 3, "random", domain="useful", **common),
        "repetitive": build_junk(30, 1, "repetitive", domain="junk", junk_n=12, **common),
    }
    for name, b in built.items():
        write_dataset(root / name, *b, force=False)
    return {name: root / name for name in built}


@pytest.fixture(scope="module")
def random_biod_junk(biod_junk_dirs):
    return load_dataset(biod_junk_dirs["random"])


@pytest.fixture(scope="module")
def repetitive_biod_junk(biod_junk_dirs):
    return load_dataset(biod_junk_dirs["repetitive"])


RANDOM = ["random_junk", "random_biod_junk"]
REPETITIVE = ["repetitive_junk", "repetitive_biod_junk"]


def _mixture(ds, ratio, exposures=2, window=48, seed=1):
    useful = ExposureStream(
        ds.source(), ds.tokenizer, exposures=exposures, seed=seed, window=window
    )
    junk = ExposureStream(
        junk_source(ds),
        ds.tokenizer,
        exposures=ENDLESS,
        seed=seed,
        window=window,
        order_tag=TAG_JUNK_ORDER,
    )
    return MixtureStream(useful, junk, ratio)


def _joined(windows):
    """The token stream of consecutive overlapping windows, without padding."""
    if not windows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ids = np.concatenate([windows[0].ids] + [w.ids[1:] for w in windows[1:]])
    people = np.concatenate([windows[0].people] + [w.people[1:] for w in windows[1:]])
    keep = ids != PAD
    return ids[keep], people[keep]


def _predicted(w):
    return int((w.ids != PAD).sum()) - 1


@pytest.mark.parametrize("ratio", [1, 3, 7])
@pytest.mark.parametrize("mixture", RANDOM)
def test_exact_ratio_pure_windows_exact_exposures(request, mixture, ratio):
    ds = request.getfixturevalue(mixture)
    stream = _mixture(ds, ratio, exposures=2)
    windows = list(stream)
    assert len(windows) == stream.count_windows() == (ratio + 1) * len(windows[:: ratio + 1])
    # the window pattern: one useful window, then r junk windows
    assert [w.source for w in windows] == [
        USEFUL if k % (ratio + 1) == 0 else JUNK for k in range(len(windows))
    ]
    useful = [w for w in windows if w.source == USEFUL]
    junk = [w for w in windows if w.source == JUNK]
    # exact token ratio over the whole run (predicted tokens: all but each window's first)
    n_useful, n_junk = sum(map(_predicted, useful)), sum(map(_predicted, junk))
    assert n_junk == ratio * n_useful
    assert stream.stats()["junk_tokens"] == n_junk and stream.stats()["useful_tokens"] == n_useful
    # purity: the useful windows are exactly the plain useful stream, the junk windows a prefix
    # of the plain junk stream; so no useful token is in a junk window and vice versa
    plain = ExposureStream(ds.source(), ds.tokenizer, exposures=2, seed=1, window=48)
    plain_windows = list(plain)
    assert len(plain_windows) == len(useful)
    for a, b in zip(useful, plain_windows, strict=True):
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.people, b.people)
    junk_ids, junk_people = _joined(junk)
    ref = _mixture(ds, ratio).junk
    ref_ids, _ = _joined([ref.take() for _ in range(len(junk) + 1)])
    assert np.array_equal(junk_ids, ref_ids[: len(junk_ids)])
    # useful exposures are exact and count useful people only
    assert (stream.counts == 2).all() and len(stream.counts) == ds.n
    ids, people = _joined(useful)
    eos = ds.tokenizer.eos_id
    starts = people[1:][ids[:-1] == eos]
    assert np.bincount(starts[starts >= 0], minlength=ds.n).tolist() == [2] * ds.n
    assert (junk_people[junk_ids != eos] >= 0).all()


def test_useful_stream_of_a_junk_dataset_is_its_bios_people(random_junk):
    from kcap.data.bios import BioSPopulation

    pop = BioSPopulation.sample(random_junk.n, random_junk.manifest["seed"])
    assert np.array_equal(pop.name, random_junk.population.name)
    assert random_junk.bits == bios_bits(random_junk.n)


@pytest.mark.parametrize("mixture", RANDOM)
def test_random_junk_people_never_useful_never_repeated(request, mixture):
    ds = request.getfixturevalue(mixture)
    stream = make_stream(ds, exposures=4, seed=0, window=64)
    junk_people = set()
    for w in stream:
        if w.source == JUNK:
            junk_people.update(w.people[w.people >= 0].tolist())
    assert len(junk_people) > 8 * ds.n
    source = stream.junk.source
    names = source.names(np.array(sorted(junk_people)))
    assert len(np.unique(names)) == len(names)  # never repeated
    assert not np.isin(names, ds.population.name).any()  # never a useful person
    assert ((names >= 0) & (names < P.N0)).all()


def test_junk_names_over_a_long_run():
    useful = np.random.default_rng(0).choice(P.N0, 5000, replace=False)
    names = JunkNames(7, useful)
    k = np.arange(300_000)
    first = names(k)
    assert len(np.unique(first)) == len(k) and not np.isin(first, useful).any()
    # past the name space a new cycle starts: again distinct and never useful
    later = names(names.space + k)
    assert len(np.unique(later)) == len(k) and not np.isin(later, useful).any()
    assert not np.array_equal(later, first)
    assert np.array_equal(names(k[:100]), first[:100])  # a pure function of k


@pytest.mark.parametrize("space", [1, 2, 3, 7, 1000, 4097])
def test_feistel_is_a_bijection(space):
    keys = np.array([1, 2, 3, 4], dtype=np.uint64)
    out = feistel_permute(np.arange(space), space, keys)
    assert sorted(out.tolist()) == list(range(space))


def test_nth_unexcluded():
    excluded = np.array([0, 2, 3, 7])
    assert nth_unexcluded(np.arange(6), excluded).tolist() == [1, 4, 5, 6, 8, 9]


def test_random_junk_documents_are_the_named_junk_people(random_junk):
    source = RandomJunkSource(random_junk.manifest["seed"], random_junk.population.name)
    block = source.people(3)
    docs = list(source.documents(3, np.array([5, 0])))
    assert [d.person for d in docs] == [3 * source.n + 5, 3 * source.n]
    assert docs[0].text.startswith(block.full_name(5))
    assert np.array_equal(block.name, source.names(3 * source.n + np.arange(source.n)))


@pytest.mark.parametrize("mixture", REPETITIVE)
def test_repetitive_junk_cycles_a_fixed_population(request, mixture):
    ds = request.getfixturevalue(mixture)
    assert len(ds.extras[JUNK_POPULATION].name) == 12
    assert not np.isin(ds.extras[JUNK_POPULATION].name, ds.population.name).any()
    stream = make_stream(ds, exposures=3, seed=0, window=32)
    junk_people = np.concatenate([w.people[w.people >= 0] for w in stream if w.source == JUNK])
    assert set(junk_people.tolist()) == set(range(12))  # the same 12 people, over and over
    assert (stream.junk.counts >= 2).all()


def _doc_starts(windows, eos):
    ids, _ = _joined(windows)
    return ids[1:][ids[:-1] == eos]


@pytest.mark.parametrize("mixture", RANDOM)
def test_domain_token_on_useful_biographies(request, mixture):
    ds = request.getfixturevalue(mixture)
    tok = ds.tokenizer
    wiki, junk_id = tok.hf.token_to_id(DOMAIN_TOKEN), tok.hf.token_to_id(JUNK_TOKEN)
    assert wiki is not None and junk_id is not None and wiki != junk_id  # both reserved
    windows = list(make_stream(ds, exposures=2, seed=0, window=64))
    useful = [w for w in windows if w.source == USEFUL]
    junk = [w for w in windows if w.source == JUNK]
    starts = _doc_starts(useful, tok.eos_id)
    assert (starts == wiki).all() and len(starts) == 2 * ds.n
    junk_ids, _ = _joined(junk)
    assert not np.isin(junk_ids, [wiki, junk_id]).any()
    # the evaluation renders useful biographies the same way
    for doc in ds.source(eval_=True).documents(0, np.arange(ds.n)):
        assert doc.pieces[0] == (DOMAIN_TOKEN, 0, 0)
        assert doc.text.startswith(DOMAIN_TOKEN + ds.population.full_name(doc.person))


@pytest.mark.parametrize("mixture", REPETITIVE)
def test_junk_token_on_junk_biographies(request, mixture):
    ds = request.getfixturevalue(mixture)
    tok = ds.tokenizer
    marker = tok.hf.token_to_id(JUNK_TOKEN)
    windows = list(make_stream(ds, exposures=2, seed=0, window=64))
    junk_starts = _doc_starts([w for w in windows if w.source == JUNK], tok.eos_id)
    assert len(junk_starts) > 0 and (junk_starts == marker).all()
    useful_ids, _ = _joined([w for w in windows if w.source == USEFUL])
    assert not (useful_ids == marker).any()
    assert not any(
        d.pieces[0][0] == JUNK_TOKEN for d in ds.source(eval_=True).documents(0, np.arange(3))
    )


class _Recorder(nn.Module):
    """A uniform model that records the rows it is asked to score."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.rows = vocab, []

    def forward(self, idx):
        self.rows += idx.tolist()
        return torch.zeros(*idx.shape, self.vocab)


def test_measurement_conditions_on_the_domain_token(random_junk):
    ds = random_junk
    tok = ds.tokenizer
    model = _Recorder(tok.vocab_size)
    r = measure(model, ds, P_count=1000, batch_size=8)
    assert r.kind == "junk" and r.n_people == ds.n and r.n_measured == ds.n  # useful people only
    assert r.data_bits == pytest.approx(bios_bits(ds.n)["total"])
    assert r.bits["total"] == 0.0
    wiki = tok.hf.token_to_id(DOMAIN_TOKEN)
    assert len(model.rows) == ds.n
    for row in model.rows:
        assert row[:2] == [tok.eos_id, wiki]
    # p1 is the name loss after the domain token: uniform over the vocabulary, per name token
    docs = [
        tok.encode_pieces(d.pieces) for d in ds.source(eval_=True).documents(0, np.arange(ds.n))
    ]
    name_tokens = np.mean([sum(1 for lab in d[1] if lab == 1) for d in docs])
    assert r.p1 == pytest.approx(name_tokens * np.log(tok.vocab_size), rel=1e-5)


@pytest.mark.parametrize("mixture", RANDOM)
def test_mixture_resume_is_exact(request, mixture):
    ds = request.getfixturevalue(mixture)
    full = [w.ids.copy() for w in make_stream(ds, exposures=2, seed=3, window=40)]
    for k in (1, 6, len(full) // 2 + 1, len(full) - 1):
        stream = make_stream(ds, exposures=2, seed=3, window=40)
        for _ in range(k):
            next(stream)
        state = copy.deepcopy(stream.state_dict())
        resumed = make_stream(ds, exposures=2, seed=3, window=40, state=state)
        rest = [w.ids for w in resumed]
        assert len(rest) == len(full) - k
        assert all(np.array_equal(a, b) for a, b in zip(rest, full[k:], strict=True))


def test_junk_run_resumes_exactly(tmp_path, junk_dirs):
    from kcap.training.config import parse_config
    from kcap.training.trainer import Trainer

    cfg = parse_config(
        {
            "dataset": {"path": str(junk_dirs["random"])},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
            "training": {"exposures": 2, "batch_size": 4, "window": 32, "threads": 1},
            "measurement": {"batch_size": 24},
        }
    )
    straight = Trainer(cfg, tmp_path / "a", progress=False)
    straight.fit()
    first = Trainer(cfg, tmp_path / "b", progress=False)
    assert first.fit(stop_at=straight.total_steps // 2) is None
    resumed = Trainer(cfg, tmp_path / "b", progress=False)
    assert resumed.load_checkpoint()
    resumed.fit()
    for a, b in zip(
        straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert straight.summary()["stream"] == resumed.summary()["stream"]
    assert (straight.run_dir / "measure.json").read_text() == (
        resumed.run_dir / "measure.json"
    ).read_text()


# ----------------------------------------------------------------------------- useful bioD


@pytest.mark.parametrize("mixture", ["random_biod_junk", "repetitive_biod_junk"])
def test_biod_useful_people_and_bits_are_the_plain_biod_datasets(request, mixture, biod_ds):
    ds = request.getfixturevalue(mixture)
    assert ds.manifest["params"]["useful"] == "biod" and ds.measure_kind == "biod"
    assert isinstance(ds.population, BioDPopulation)
    assert ds.population.params == biod_ds.population.params
    for field in ("name", "chunks", "values"):
        assert np.array_equal(getattr(ds.population, field), getattr(biod_ds.population, field))
    assert ds.bits == biod_ds.bits == pytest.approx(biod_bits(30, **BIOD))
    assert ds.manifest["attributes"] == biod_ds.manifest["attributes"] == ["ID 1", "ID 2", "ID 3"]


def test_random_biod_junk_people_are_fresh_people_over_the_useful_chunk_sets(random_biod_junk):
    ds = random_biod_junk
    useful = ds.population
    source = junk_source(ds)
    assert isinstance(source, RandomBioDJunkSource)
    block = source.people(3)
    assert block.params == replace(useful.params, n=source.n)
    assert np.array_equal(block.chunks, useful.chunks)  # the dataset's chunk sets
    assert np.array_equal(block.name, source.names(3 * source.n + np.arange(source.n)))
    assert np.array_equal(source.names.excluded, np.sort(useful.name))  # never a useful name
    assert not np.isin(block.name, useful.name).any()
    assert not np.array_equal(block.values, source.people(4).values)  # fresh values per block
    assert np.array_equal(block.values, source.people(3).values)  # ... a function of the block
    assert sorted(set(block.values.ravel().tolist())) == list(range(BIOD["d"]))  # uniform over D
    docs = list(source.documents(3, np.array([5, 0])))
    assert [d.person for d in docs] == [3 * source.n + 5, 3 * source.n]
    assert docs[0].text.startswith(block.full_name(5))
    for a in range(BIOD["k"]):
        assert f"ID {a + 1} is {block.value_text(5, a)}." in docs[0].text


def test_repetitive_biod_junk_is_a_stored_population_over_the_useful_chunk_sets(
    repetitive_biod_junk,
):
    ds = repetitive_biod_junk
    junk = ds.extras[JUNK_POPULATION]
    assert isinstance(junk, BioDPopulation) and junk.n == 12 == ds.manifest["params"]["junk_n"]
    assert junk.params == replace(ds.population.params, n=12)
    assert np.array_equal(junk.chunks, ds.population.chunks)
    assert not np.array_equal(junk.values, ds.population.values[:12])
    assert ds.manifest["mixture"]["junk_people"] == "bioD(12) cycled"
    for doc in junk_source(ds).documents(0, np.arange(12)):  # marked: domain "junk"
        assert doc.text.startswith(JUNK_TOKEN + junk.full_name(doc.person))
        assert f"ID 1 is {junk.value_text(doc.person, 0)}." in doc.text


def test_biod_mixture_is_measured_with_the_biod_bound_on_its_useful_people(random_biod_junk):
    ds = random_biod_junk
    tok = ds.tokenizer
    model = _Recorder(tok.vocab_size)
    r = measure(model, ds, P_count=1000, batch_size=8)
    assert r.kind == "junk" and r.n_people == r.n_measured == ds.n  # useful people only
    assert r.data_bits == pytest.approx(biod_bits(30, **BIOD)["total"])
    assert r.R_max == pytest.approx(r.data_bits / 1000)
    assert set(r.bits_per_attribute) == {"ID 1", "ID 2", "ID 3"} and r.p3 is not None
    wiki = tok.hf.token_to_id(DOMAIN_TOKEN)
    assert len(model.rows) == ds.n and all(row[:2] == [tok.eos_id, wiki] for row in model.rows)
    # a uniform model: every token costs ln V; p2 per (person, attribute), p3 its first chunk
    docs = [
        tok.encode_pieces(d.pieces) for d in ds.source(eval_=True).documents(0, np.arange(ds.n))
    ]
    value_tokens = sum(sum(1 for lab in d[1] if lab >= 2) for d in docs) / (ds.n * BIOD["k"])
    first_chunk = sum(
        sum(1 for lab, i in zip(d[1], d[2], strict=True) if lab >= 2 and i == 0) for d in docs
    ) / (ds.n * BIOD["k"])
    ln_v = math.log(tok.vocab_size)
    assert r.p2 == pytest.approx(value_tokens * ln_v, rel=1e-5)
    assert r.p3 == pytest.approx(first_chunk * ln_v, rel=1e-5)
    k, d, length, t = (BIOD[x] for x in "kdlt")
    diversity = k * d * (length * math.log2(t) - math.log2(d) - r.p3 / math.log(2))
    assert r.bits_unclipped["diversity"] == pytest.approx(diversity, rel=1e-6)


# ----------------------------------------------------------------------------- config, naming

_JUNK_CONFIG = {
    "dataset": {"kind": "junk", "n": 100, "ratio": 7, "junk": "random", "vocab": 1024},
    "model": {"preset": "gpt2-2-1", "overrides": {"d_model": 16}},
    "training": {"exposures": 100},
}


def _config(**dataset):
    from kcap.training.config import parse_config

    raw = copy.deepcopy(_JUNK_CONFIG)
    raw["dataset"].update(dataset)
    return parse_config(raw)


def test_useful_biod_config_names_and_keys_its_runs_apart():
    from kcap.experiments.grid import dataset_key, run_name

    bios = _config(domain="useful")
    # without ``useful`` nothing changed: the dump and the dataset key
    assert "useful" not in bios.dataset.model_dump()
    assert dataset_key(bios) == "f9443f1de9515a18"  # its value before the field existed
    assert run_name(bios).startswith("junk-random-r7-useful-token-bios-n100-gpt2-2-1-d16-e100-")
    biod = _config(domain="useful", useful="biod", **BIOD)
    assert biod.dataset.model_dump()["useful"] == "biod"
    name = run_name(biod)
    assert name.startswith("junk-random-r7-useful-token-biod-n100-k3c2d16l2t10-gpt2-2-1-d16-e100-")
    assert dataset_key(biod) != dataset_key(bios)


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"kind": "bios", "useful": "biod"}, "dataset.useful is only for junk mixtures"),
        ({"useful": "biod", "k": 3, "c": 2, "d": 16, "l": 2}, "a bioD junk mixture needs"),
        ({"k": 3}, "need useful: biod"),
        ({"useful": "bioX"}, "dataset.useful: must be one of"),
    ],
)
def test_bad_useful_config_is_one_line(dataset, message):
    with pytest.raises(KcapError) as e:
        _config(**dataset)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_train_config_generates_a_biod_mixture():
    """A run config (kcap train, sweeps) builds the bioD mixture it names, not a bioS one."""
    from kcap.training.trainer import build_dataset

    spec = _config(n=8, vocab=400, useful="biod", **BIOD).dataset
    manifest = build_dataset(spec)[0]
    assert manifest["params"]["useful"] == "biod"
    assert all(manifest["params"][key] == value for key, value in BIOD.items())


# ----------------------------------------------------------------------------- CLI

_runner = CliRunner()
_CLI_JUNK = ["data", "junk", "--n", "20", "--ratio", "1", "--junk", "repetitive", "--junk-n", "5"]
_CLI_BIOD = ["--k", "2", "--c", "1", "--d", "8", "--l", "1", "--t", "8"]


def _cli(*args):
    from kcap.cli.main import app

    return _runner.invoke(app, [str(a) for a in args])


def test_cli_junk_with_useful_biod(tmp_path):
    out = tmp_path / "ds"
    r = _cli(*_CLI_JUNK, "--useful", "biod", *_CLI_BIOD, "--vocab", 400, "--out", out)
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"] == {
        **{"n": 20, "ratio": 1, "junk": "repetitive", "domain": "none", "useful": "biod"},
        **{"k": 2, "c": 1, "d": 8, "l": 1, "t": 8, "junk_n": 5},
    }
    assert manifest["bits"] == pytest.approx(biod_bits(20, 2, 1, 8, 1, 8))
    ds = load_dataset(out)
    assert (
        isinstance(ds.extras[JUNK_POPULATION], BioDPopulation) and ds.extras[JUNK_POPULATION].n == 5
    )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--useful", "biod", "--k", "2"], "--c"),
        (_CLI_BIOD, "--k"),
        (["--useful", "bioX"], "--useful"),
        (["--useful", "biod", *_CLI_BIOD[:4], "--d", "9", *_CLI_BIOD[6:]], "--d"),
    ],
)
def test_cli_junk_bad_biod_input_is_one_line_and_writes_nothing(tmp_path, args, field):
    out = tmp_path / "ds"
    r = _cli(*_CLI_JUNK, *args, "--out", out)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {field}:"), r.output
    assert not out.exists()
