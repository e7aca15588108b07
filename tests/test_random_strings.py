"""Random strings: exact bits, one sequence per row for E epochs, fresh strings, memorised bits
net of the fresh-string floor (0 for a uniform or unigram model, S·log2 V per sequence for an
oracle, less the unavoidable identification cost for a causal one), the capacity plateau,
training."""

import copy
import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from kcap.data.biod import symbol
from kcap.data.build import write_dataset
from kcap.data.dataset import DEFAULT_EVAL_SEED, load_dataset
from kcap.data.random_strings import RandomStrings, build_random
from kcap.errors import KcapError
from kcap.measure import measure
from kcap.measure.memorization import capacity_plateau, memorized_bits
from kcap.tokenization.factory import make_stream

BIG = 1e4


@pytest.fixture(scope="module")
def rs(random_dir):
    return load_dataset(random_dir)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """M = 2000 strings of S = 8 over V = 16: enough for the floor to stand out of the noise."""
    out = tmp_path_factory.mktemp("random-big") / "ds"
    write_dataset(out, *build_random(2000, 8, 16, seed=3), force=False)
    return load_dataset(out)


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


def test_fresh_strings_are_never_training_strings_and_deterministic(rs):
    strings = rs.population
    fresh = strings.fresh(DEFAULT_EVAL_SEED)
    assert fresh.sequences.shape == strings.sequences.shape
    assert fresh.sequences.dtype == strings.sequences.dtype and fresh.v == strings.v
    assert not {tuple(x) for x in fresh.sequences.tolist()} & {
        tuple(x) for x in strings.sequences.tolist()
    }
    assert np.array_equal(fresh.sequences, strings.fresh(DEFAULT_EVAL_SEED).sequences)
    assert not np.array_equal(fresh.sequences, strings.fresh(DEFAULT_EVAL_SEED + 1).sequences)
    assert strings.fresh(DEFAULT_EVAL_SEED, 5).sequences.shape == (5, 8)
    # a stream of its own: another seed's strings, not the training ones shifted
    assert not np.array_equal(fresh.sequences, RandomStrings.sample(24, 8, 16, 2).sequences)


def test_fresh_strings_avoid_training_strings_in_a_tiny_space():
    strings = RandomStrings(0, 8, np.array([[0], [3], [3], [5], [6], [7]], dtype=np.int16))
    fresh = strings.fresh(1, 2000).sequences.ravel()
    # uniform over the three unseen strings: each one drawn, none of the seen ones
    assert sorted(Counter(fresh.tolist())) == [1, 2, 4]
    assert min(Counter(fresh.tolist()).values()) > 2000 / 3 * 0.8
    every = RandomStrings(0, 2, np.array([[0], [1], [1]], dtype=np.int16))
    with pytest.raises(KcapError, match="none is left unseen"):
        every.fresh(1)


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
            for t, x in enumerate((seq or ())[:S]):
                out[b, t, x] = BIG
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


class Mixture(nn.Module):
    """A causal model of the strings: q(x) = λ·[x ∈ K]/|K| + (1 - λ)·Π_t p(x_t).

    It knows the strings K (none when K is empty) and elsewhere is the unigram p over the V
    symbols, symbol 0 ``w`` times as likely as each other one (w = 1: uniform), eos never. The
    logits at position t are log q(x_1..x_t s) over the next symbol s: they read the tokens up to
    t only, and their softmax is q's conditional, so the sequence's NLL is exactly -ln q(x)."""

    def __init__(self, v, known=(), lam=0.0, w=1.0):
        super().__init__()
        self.v, self.lam = v, lam if len(known) else 0.0
        self.p = np.full(v, 1.0)
        self.p[0] = w
        self.p /= self.p.sum()
        self.known = {tuple(k) for k in np.asarray(known).tolist()}
        self.prefixes = Counter(k[:t] for k in self.known for t in range(len(k) + 1))

    def forward(self, idx):
        out = torch.full((*idx.shape, self.v + 1), -BIG)
        for b, row in enumerate(idx.tolist()):
            for t in range(idx.shape[1]):
                prefix = tuple(row[1 : t + 1])  # the symbols after the opening eos
                mass = (1 - self.lam) * np.prod(self.p[list(prefix)]) * self.p
                if self.known:
                    counts = [self.prefixes[(*prefix, s)] for s in range(self.v)]
                    mass = mass + self.lam * np.array(counts) / len(self.known)
                out[b, t, : self.v] = torch.as_tensor(np.log(mass))
        return out

    def gain(self, seqs):
        """S·log2 V + log2 q(x) of each string: its memorised bits before clipping."""
        seqs = np.asarray(seqs)
        known = np.array([tuple(x) in self.known for x in seqs.tolist()])
        q_known = self.lam * known / max(len(self.known), 1)
        q = q_known + (1 - self.lam) * np.prod(self.p[seqs], axis=1)
        return seqs.shape[1] * math.log2(self.v) + np.log2(q)


def clipped_moments(s, v, w, lam=0.0):
    """Mean and variance of max(0, gain) of a uniform random string under ``Mixture`` away from
    K: gain = log2(1 - λ) + k·log2(V·p_0) + (S - k)·log2(V·p_1), k ~ Binomial(S, 1/V) the count
    of symbol 0 (exact, by summing over k)."""
    z = v - 1 + w
    mean = second = 0.0
    for k in range(s + 1):
        pk = math.comb(s, k) * (1 / v) ** k * (1 - 1 / v) ** (s - k)
        g = math.log2(1 - lam) + k * math.log2(v * w / z) + (s - k) * math.log2(v / z)
        mean += pk * max(0.0, g)
        second += pk * max(0.0, g) ** 2
    return mean, second - mean**2


def floor_tolerance(var, m_train, m_fresh, scale=1.0):
    """Five standard deviations of a difference of two sums of iid clipped gains (the training
    strings the model does not know, and the fresh strings): P(|noise| > tol) < 6e-7."""
    return 5 * scale * math.sqrt(var * (m_train + m_fresh))


def test_causal_oracle_is_causal(rs):
    model = Mixture(16, rs.population.sequences[:5], lam=0.5, w=2.0)
    idx = torch.as_tensor(np.c_[np.full(5, 16), rs.population.sequences[:5, :-1]])
    later = idx.clone()
    later[:, 4:] = torch.randint(0, 16, (5, idx.shape[1] - 4))
    assert torch.equal(model(idx)[:, :4], model(later)[:, :4])
    assert not torch.equal(model(idx)[:, 4:], model(later)[:, 4:])


def test_unigram_model_nets_zero_memorised_bits(big):
    """Memorised nothing, yet not uniform: symbol 0 twice as likely as each other symbol. Its
    clipped gain on a random string has mean 0.218 bits and sd 0.411 (exact, `clipped_moments`),
    so the raw total is a floor of about 0.218·M bits that grows with M, while the net figure is
    a difference of two sums of M iid such gains: 0 in expectation, sd 0.411·sqrt(2M) = 26 bits
    at M = 2000; the tolerance is 5 sd, 130 bits, a third of the floor."""
    model = Mixture(16, w=2.0)
    r = measure(model, big, P_count=100)
    m, (mean, var) = big.n, clipped_moments(8, 16, 2.0)
    fresh = big.population.fresh(DEFAULT_EVAL_SEED).sequences
    raw, floor = r.details["raw_memorized_bits"], r.details["fresh_floor_bits"]
    # the scores are exactly the model's: clipped gains of the training and the fresh strings
    assert raw == pytest.approx(np.maximum(0, model.gain(big.population.sequences)).sum(), rel=1e-5)
    assert floor == pytest.approx(np.maximum(0, model.gain(fresh)).sum(), rel=1e-5)
    # raw: the floor, 0.218 bits a sequence, though nothing was memorised
    assert raw == pytest.approx(m * mean, abs=floor_tolerance(var, m, 0))
    tol = floor_tolerance(var, m, m)
    assert raw > 2 * tol
    # net: nothing
    assert abs(r.bits["total"]) <= tol and r.bits["value"] == r.bits["total"]
    assert r.details["net_memorized_bits"] == r.bits["total"] == pytest.approx(raw - floor)
    assert r.bits["total"] / 100 == pytest.approx(r.R)


def test_fresh_floor_is_subsampled_and_scaled_like_the_training_strings(big):
    model = Mixture(16, w=2.0)
    r = measure(model, big, P_count=100, max_people=400)
    assert r.n_measured == 400 and r.details["fresh_sequences"] == 400
    fresh = big.population.fresh(DEFAULT_EVAL_SEED, 400).sequences
    scale = big.n / 400
    floor = np.maximum(0, model.gain(fresh)).sum() * scale
    assert r.details["fresh_floor_bits"] == pytest.approx(floor, rel=1e-5)
    var = clipped_moments(8, 16, 2.0)[1]
    assert abs(r.bits["total"]) <= floor_tolerance(var, 400, 400, scale)


def test_causal_oracle_nets_the_bits_of_the_sequences_it_knows(rs):
    """Knows 8 of the 24 strings (λ = 1 - 2^-20) and is uniform elsewhere: a string it does not
    know, trained on or fresh, has gain log2(1 - λ) = -20 bits, clipped to 0, so the floor is
    exactly 0 and net = raw = Σ over K of S·log2 V + log2(λ/|K| + (1 - λ)·V^-S). That is |K|·S·
    log2 V less log2(|K|/λ) ≈ 3 bits a string: a causal model must tell the |K| strings apart
    from their first symbols (Kraft: Σ over K of q(x) <= 1), which only the non-causal `Oracle`
    above gets for free."""
    known = rs.population.sequences[::3]
    lam = 1 - 2**-20
    r = measure(Mixture(16, known, lam=lam), rs, P_count=100, batch_size=5)
    k = len(known)
    exact = k * (32 + math.log2(lam / k + (1 - lam) * 16**-8))
    assert r.bits["total"] == pytest.approx(exact, rel=1e-5)
    assert 0 <= k * 32 - r.bits["total"] <= k * math.log2(k / lam) + 1e-3
    assert r.details["fresh_floor_bits"] == 0.0
    assert r.details["raw_memorized_bits"] == r.bits["total"]
    assert r.details["sequences_clipped"] == rs.n - k


def test_causal_oracle_over_a_non_uniform_floor_nets_only_what_it_knows(big):
    """Knows 16 strings (λ = 0.1) and is the skewed unigram elsewhere. The strings it does not
    know keep a clipped gain of mean 0.157 and sd 0.367 bits (`clipped_moments`, shifted by
    log2(1 - λ)); net = Σ_K gain - (the floor of the |K| fresh strings the known ones displace),
    expected Σ_K gain - |K|·0.157, within 5 sd of M - |K| training and M fresh strings (116
    bits). The raw total overshoots by about M·0.157 = 313 bits."""
    known = big.population.sequences[:: big.n // 16]
    lam = 0.1
    model = Mixture(16, known, lam=lam, w=2.0)
    r = measure(model, big, P_count=100)
    k, m = len(known), big.n
    mean, var = clipped_moments(8, 16, 2.0, lam)
    expected = model.gain(known).sum() - k * mean
    tol = floor_tolerance(var, m - k, m)
    assert r.bits["total"] == pytest.approx(expected, abs=tol)
    assert r.details["raw_memorized_bits"] - expected > 2 * tol


def test_reports_show_raw_floor_and_net(rs):
    from kcap.experiments.run_report import measurement_rows

    r = measure(Mixture(16, rs.population.sequences[:4], lam=0.5, w=2.0), rs, P_count=100)
    d = r.details
    label, text = next(row for row in measurement_rows(r.to_dict()) if "floor" in row[0])
    assert "raw" in label and "net" in label
    assert text == (
        f"{d['raw_memorized_bits']:,.0f} - {d['fresh_floor_bits']:,.0f} = {r.bits['total']:,.0f}"
    )


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
