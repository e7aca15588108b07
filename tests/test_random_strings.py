"""Random strings: exact bits, one sequence per row for E epochs, memorised bits (0 for a
uniform model, S·log2 V per sequence for an oracle), the capacity plateau, training."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from kcap.data.biod import symbol
from kcap.data.dataset import load_dataset
from kcap.data.random_strings import build_random
from kcap.measure.knowledge import measure
from kcap.measure.memorization import capacity_plateau, memorized_bits
from kcap.tokenization.factory import make_stream

BIG = 1e4


@pytest.fixture(scope="module")
def rs(random_dir):
    return load_dataset(random_dir)


def test_defaults_carry_704_bits_per_sequence():
    manifest, strings, tok = build_random(5, seed=0)
    assert manifest["params"] == {"m": 5, "s": 64, "v": 2048}
    assert manifest["bits_per_sequence"] == pytest.approx(704.0)
    assert manifest["bits"]["total"] == pytest.approx(5 * 704.0)
    assert tok.vocab_size == 2049 and tok.eos_id == 2048
    assert strings.sequences.shape == (5, 64) and strings.sequences.max() < 2048


def test_dataset_and_tokenizer(rs):
    assert rs.kind == "random" and rs.measure_kind == "random" and rs.n == 24
    seqs = rs.population.sequences
    assert seqs.shape == (24, 8) and seqs.min() >= 0 and seqs.max() < 16
    assert np.array_equal(rs.population.token_ids(rs.tokenizer), seqs)  # symbol i is token i
    text = "".join(symbol(int(x)) for x in seqs[0])
    assert rs.tokenizer.encode(text)[0] == seqs[0].tolist()
    assert rs.manifest["vocab"]["vocab_size"] == 17
    assert rs.manifest["vocab"]["used_tokens"] == len(np.unique(seqs)) + 1
    doc = next(rs.source().documents(0, np.array([3])))
    assert rs.tokenizer.encode_pieces(doc.pieces)[0] == seqs[3].tolist()


def test_one_sequence_per_row_every_sequence_e_times(rs):
    stream = make_stream(rs, exposures=3, seed=0, window=64)
    windows = list(stream)
    assert len(windows) == stream.count_windows() == 3 * rs.n
    eos = rs.tokenizer.eos_id
    seen = np.zeros(rs.n, dtype=int)
    for w in windows:
        assert len(w.ids) == 9 and w.ids[0] == eos
        i = int(w.people[1])
        assert np.array_equal(w.ids[1:], rs.population.sequences[i])
        seen[i] += 1
    assert (seen == 3).all() and (stream.counts == 3).all()
    # each epoch is a fresh permutation of all sequences
    epochs = [[int(w.people[1]) for w in windows[e * rs.n : (e + 1) * rs.n]] for e in range(3)]
    assert all(sorted(e) == list(range(rs.n)) for e in epochs) and epochs[0] != epochs[1]


def test_row_stream_resume_is_exact(rs):
    full = [w.ids.copy() for w in make_stream(rs, exposures=2, seed=5, window=8)]
    stream = make_stream(rs, exposures=2, seed=5, window=8)
    for _ in range(30):
        next(stream)
    resumed = make_stream(
        rs, exposures=2, seed=5, window=8, state=copy.deepcopy(stream.state_dict())
    )
    rest = [w.ids for w in resumed]
    assert all(np.array_equal(a, b) for a, b in zip(rest, full[30:], strict=True))
    assert len(rest) == len(full) - 30


def test_window_must_hold_a_sequence(rs):
    from kcap.errors import KcapError

    with pytest.raises(KcapError, match=r"training\.window"):
        make_stream(rs, exposures=1, seed=0, window=4)


class Oracle(nn.Module):
    """Knows the sequences in ``known``: the true next token gets all the mass."""

    def __init__(self, ds, known):
        super().__init__()
        self.V = ds.tokenizer.vocab_size
        self.seqs = {tuple(s) for s in ds.population.sequences[known].tolist()}

    def forward(self, idx):
        out = torch.zeros(*idx.shape, self.V)
        S = idx.shape[1]
        for b, row in enumerate(idx.tolist()):
            seq = next((s for s in self.seqs if list(s[: S - 1]) == row[1:]), None)
            if seq is not None:
                for t in range(S):
                    out[b, t, seq[t]] = BIG
        return out


def test_uniform_model_memorises_nothing(rs):
    class Uniform(nn.Module):
        def forward(self, idx):
            return torch.zeros(*idx.shape, rs.tokenizer.vocab_size)

    r = measure(Uniform(), rs, P_count=100)
    assert r.bits["total"] == 0.0 and r.R == 0.0 and r.clipped == ["value"]
    # uniform over V + 1 tokens (eos included) costs slightly more than S·log2 V
    assert r.p2 == pytest.approx(8 * math.log(17), rel=1e-6)
    assert r.details["sequences_clipped"] == rs.n


def test_oracle_memorises_s_log2_v_per_sequence(rs):
    r = measure(Oracle(rs, np.arange(rs.n)), rs, P_count=100, batch_size=7)
    assert r.bits["total"] == pytest.approx(rs.n * 8 * math.log2(16), rel=1e-6)
    assert r.bits["total"] == pytest.approx(rs.bits["total"], rel=1e-6)
    assert pytest.approx(r.R_max, rel=1e-6) == r.R
    assert r.recall_accuracy == 1.0 and not r.clipped
    half = measure(Oracle(rs, np.arange(0, rs.n, 2)), rs, P_count=100)
    assert half.bits["total"] == pytest.approx(rs.n / 2 * 32, rel=1e-6)
    assert half.recall_accuracy == 0.5
    # a subset measurement is scaled to all M sequences
    sub = measure(Oracle(rs, np.arange(rs.n)), rs, P_count=100, max_people=6)
    assert sub.n_measured == 6 and sub.bits["total"] == pytest.approx(rs.n * 32, rel=1e-6)


def test_memorized_bits_clips_each_sequence():
    nll = np.array([0.0, 64 * math.log(2048), 2 * 64 * math.log(2048), 10 * math.log(2)])
    assert memorized_bits(nll, 64, 2048).tolist() == pytest.approx([704.0, 0.0, 0.0, 694.0])


def test_capacity_plateau():
    s, v = 64, 2048  # 704 bits per sequence
    growing = [(10, 7040.0), (20, 14080.0), (40, 28160.0)]
    c = capacity_plateau(growing, s=s, v=v, params=1000)
    assert c.bits == 28160.0 and not c.plateaued and c.at_m == 40
    flat = [(10, 7040.0), (100, 36000.0), (1000, 36500.0), (10000, 30000.0)]
    c = capacity_plateau(flat, s=s, v=v, params=10000)
    assert c.plateaued and c.bits == 36500.0 and c.at_m == 1000
    assert c.bits_per_param == pytest.approx(3.65)


def test_training_run_on_random_strings(tmp_path, random_dir):
    from kcap.training.config import parse_config
    from kcap.training.trainer import Trainer

    cfg = parse_config(
        {
            "dataset": {"path": str(random_dir)},
            "model": {"preset": "gpt2-1-1", "overrides": {"d_model": 32}},
            "training": {"exposures": 30, "batch_size": 8, "window": 8, "lr": 1e-2, "threads": 1},
        }
    )
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert trainer.total_steps == 30 * 24 // 8
    r = trainer.fit()
    assert r.kind == "random" and 0 < r.bits["total"] <= r.data_bits
    summary = trainer.summary()
    assert summary["exposures"] == {"target": 30, "min": 30, "max": 30}
    assert summary["tokens"] == 30 * 24 * 8
