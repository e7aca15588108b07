"""The capacity fit: recovers a known law from synthetic runs; labels; best-of; data limits."""

import math

import pytest
import yaml

import synthetic_runs as syn
from kcap.experiments.analysis import (
    Estimate,
    analyse,
    arch_label,
    family_label,
    find,
    load_points,
    model_name,
    ratio_of,
    scale_variant,
)
from kcap.experiments.store import ResultsStore


def test_fit_recovers_a_known_R_with_a_bootstrap_interval(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        syn.law_grid(store, 1.7, noise=0.03)
    (law,) = analyse(load_points(tmp_path / "r.db"))
    assert law.key == ("bioS", 1000, "gpt2", None)
    assert pytest.approx(1.7, rel=0.03) == law.R
    lo, hi = law.interval
    assert law.interval_kind == "bootstrap" and lo <= law.R <= hi and hi - lo < 0.2
    assert law.slope == pytest.approx(1.0, abs=0.05)
    assert law.peak_R == pytest.approx(max(p.R for p in law.points))
    # every size met two datasets bigger than it could hold (a plateau) except the largest
    at_cap = {m.P for m in law.models if m.at_capacity}
    assert at_cap == set(syn.SIZES[:-1])


def test_interval_over_seeds(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        syn.law_grid(store, 1.2, seeds=(0, 1, 2), noise=0.05)
    (law,) = analyse(load_points(tmp_path / "r.db"))
    assert law.interval_kind == "seeds" and len(law.per_replicate) == 3
    assert law.interval[0] == min(law.per_replicate.values())
    assert law.interval[1] == max(law.per_replicate.values())
    assert pytest.approx(1.2, rel=0.05) == law.R
    assert law.interval_over == "range over 3 seeds, the same 3 models each"


def test_an_estimate_is_judged_by_its_whole_interval():
    e = Estimate.of_replicates({"0/0": 1.02, "0/1": 1.08, "0/2": 1.10}, "the same models")
    assert e.interval == (1.02, 1.10) and e.seeds == 3
    assert e.against(1.0, math.inf) is True and e.against(1.2, math.inf) is False
    assert e.against(1.05, math.inf) is None  # a threshold inside: not distinguishable
    one = Estimate.of_replicates({"0/0": 1.08}, "the same models")
    assert one.interval is None and one.text() == "1.08 [—] (one seed)"
    assert one.against(1.05, math.inf) is True  # no interval: the value alone


def test_ratios_pair_seeds_where_they_can():
    a = Estimate.of_replicates({"0/0": 2.0, "0/1": 2.2}, "x")
    paired = ratio_of(a, Estimate.of_replicates({"0/0": 1.0, "0/1": 1.0}, "x"))
    assert paired.value == pytest.approx(2.1) and paired.interval == pytest.approx((2.0, 2.2))
    assert paired.over == "range over 2 paired seeds" and paired.seeds == 2
    other = Estimate.of_replicates({"1/0": 1.0, "1/1": 1.1}, "x")  # other seeds: the widest span
    assert ratio_of(a, other).interval == pytest.approx((2.0 / 1.1, 2.2 / 1.0))
    lone = ratio_of(a, Estimate.of_replicates({"0/0": 1.0}, "x"))
    assert lone.interval is None and lone.seeds == 1 and lone.over == "one seed"
    nothing = Estimate.of_replicates({"0/0": 0.0, "0/1": 0.0}, "x")
    assert math.isinf(ratio_of(a, nothing).value) and ratio_of(nothing, nothing) is None


def test_data_limited_models_give_no_law_and_best_lr_wins(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        for n in (100, 200):  # 6-13k bits of data, far below 2 bits x 160k params
            syn.record(store, n=n, P=160_000, R=2.0)
        # two learning rates of the same model and data: only the better one counts
        for n in (3200, 6400):  # a plateau across N: the model is at capacity
            syn.record(store, n=n, P=20_000, R=1.0, lr=1e-3, exposures=100)
            syn.record(store, n=n, P=20_000, R=1.5, lr=3e-3, exposures=100)
    laws = analyse(load_points(tmp_path / "r.db"))
    limited = find(laws, exposures=1000)
    assert limited.R is None and limited.n_at_capacity == 0
    whys = {m.why for m in limited.models}
    assert whys == {"stored >= 90% of every dataset: limited by the data"}
    best = find(laws, exposures=100)
    assert len(best.points) == 2 and pytest.approx(1.5) == best.R


def test_a_single_dataset_is_no_evidence_of_capacity(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        syn.record(store, n=3200, P=20_000, R=1.5)
    (law,) = analyse(load_points(tmp_path / "r.db"))
    assert law.R is None and law.n_at_capacity == 0 and law.peak_R == pytest.approx(1.5)
    assert law.models[0].why == "over-filled at one N only (3,200): no plateau to read"


def test_onset_is_the_first_measurement_holding_a_tenth_of_the_runs_best(tmp_path):
    """Memorisation begins at the first in-training measurement holding 10% of the most the run
    held; at the first measurement that is only a bound; a run that never held 1% of its data
    has no onset."""
    with ResultsStore(tmp_path / "r.db") as store:
        late = [(25, 0.0), (50, 0.05), (75, 0.5), (100, 1.0)]
        syn.record(store, n=800, P=50_000, R=0.5, exposures=100, history=late)
        syn.record(store, n=1600, P=50_000, R=0.5, exposures=100)  # 26% at the first
        syn.record(store, n=3200, P=50_000, R=0.001, exposures=100)  # never 1% of its data
        syn.record(store, n=6400, P=50_000, R=0.5, exposures=100, history=False)
    onset = {p.n: p.onset for p in load_points(tmp_path / "r.db")}
    assert onset == {800: (75.0, False), 1600: (10.0, True), 3200: None, 6400: None}


def test_architecture_labels_ignore_size_and_name_the_paper_variants():
    assert arch_label("gpt2-2-1", {"d_model": 32}) == "gpt2"
    assert arch_label("gpt2-4-4", {"mlp_ratio": 1}) == "gpt2-quarter-mlp"
    assert arch_label("gpt2-4-4", {"mlp_ratio": 0}) == "gpt2-no-mlp"
    assert arch_label("llama-2-2", {"mlp_ratio": 8 / 3}) == "llama"  # the preset's own value
    assert arch_label("mistral-4-4") == "mistral"
    assert arch_label("gpt2-2-2-moe32") == "gpt2-moe32"
    assert arch_label("gpt2-2-2", {"rotary_fraction": 1.0}) == "gpt2-full-rotary"
    assert arch_label("gpt2-2-2", {"bias": False, "d_model": 24}) == "gpt2-no-bias"
    # a lever the table does not name is spelled out, never dropped
    assert arch_label("gpt2-2-2", {"rotary_fraction": 0.5}) == "gpt2[rotary_fraction=0.5]"
    # the paper's rotated dims as a floor change nothing at its 64-dim heads: a scale setting
    floor = {"rotary_min_dims": 16, "d_model": 24}
    assert arch_label("gpt2-2-2", floor) == "gpt2" and arch_label("llama-2-2", floor) == "llama"
    assert arch_label("gpt2-2-2", floor | {"mlp_ratio": 0}) == "gpt2-no-mlp"
    assert arch_label("gpt2-2-2", {"rotary_min_dims": 32}) == "gpt2[rotary_min_dims=32]"
    assert model_name({"preset": "gpt2-2-2", "overrides": floor | {"mlp_ratio": 0}}) == (
        "gpt2-2-2,d_model=24,rotary_min_dims=16"
    )
    assert scale_variant("gpt2-2-2", floor) == "rotary_min_dims=16"  # 12-dim heads: all 12 turn
    assert scale_variant("gpt2-2-2", {"d_model": 24}) == ""
    assert scale_variant("gpt2-12-12", {"rotary_min_dims": 16}) == ""  # 16 of 64, as without
    assert scale_variant("llama-2-2", floor) == ""  # every dim rotates already
    both = {"rotary_fraction": 1.0, "bias": False}
    assert arch_label("gpt2-2-2", both) == "gpt2[bias=False,rotary_fraction=1.0]"
    names = {
        "01-llama": "llama",
        "02-llama-tied": "llama-tied",
        "03-llama-tied-standard-mlp": "llama-tied-standard-mlp",
        "04-llama-tied-standard-mlp-gelu": "llama-tied-standard-mlp-gelu",
        "05-llama-tied-standard-mlp-gelu-layernorm-bias": (
            "llama-tied-standard-mlp-gelu-layernorm-bias"
        ),
        "gpt2-no-mlp": "gpt2-no-mlp",
        "gpt2-quarter-mlp": "gpt2-quarter-mlp",
    }
    from pathlib import Path

    root = Path(__file__).parents[1] / "configs" / "ablations"
    for stem, label in names.items():
        spec = yaml.safe_load((root / f"{stem}.yaml").read_text())
        assert arch_label(spec["preset"], {**spec["overrides"], "d_model": 64}) == label


def test_family_labels():
    assert family_label({"kind": "bios", "variant": "online"}) == "bioS"
    assert family_label({"kind": "bios", "variant": "simple"}) == "bioS-simple"
    assert family_label({"kind": "biod"}) == "bioD"
    junk = {"kind": "junk", "junk": "random", "ratio": 7}
    assert family_label(junk) == "bioS+random-junk-7:1"
    assert family_label({**junk, "domain": "useful"}) == "bioS+random-junk-7:1+domain-token"
    assert family_label({**junk, "useful": "biod"}) == "bioD+random-junk-7:1"


def test_bits_still_rising_with_n_is_not_capacity(tmp_path):
    """An under-trained model stores less than every dataset, but more as N grows: no law."""
    with ResultsStore(tmp_path / "r.db") as store:
        for n, R in ((800, 0.2), (1600, 0.4), (3200, 0.8)):  # far below the data's bits
            syn.record(store, n=n, P=100_000, R=R)
    (law,) = analyse(load_points(tmp_path / "r.db"))
    (model,) = law.models
    assert model.plateau is False and not model.at_capacity and law.R is None
    rising = "bits still rising: N = 3,200 held +100% over the most on a smaller over-filled N"
    assert model.why == rising + " (N = 1,600)"
    assert law.peak_R == pytest.approx(0.8)


def test_bits_collapsing_on_larger_data_is_not_capacity(tmp_path):
    """Measured on this CPU: a model that learns a small dataset but nothing of larger ones
    (bits falling 100x with N) failed to learn, it did not reach a limit: no law."""
    with ResultsStore(tmp_path / "r.db") as store:
        for n, R in ((200, 0.086), (400, 0.0024), (800, 0.0007)):
            syn.record(store, n=n, P=17_000, R=R, biod=(8, 1, 128, 1, 128), exposures=100)
        for n, R in ((800, 1.0), (1600, 0.95), (3200, 0.97)):  # flat within 10%: a plateau
            syn.record(store, n=n, P=50_000, R=R, biod=(8, 1, 128, 1, 128))
    laws = {law.exposures: law for law in analyse(load_points(tmp_path / "r.db"))}
    (collapsed,) = laws[100].models
    assert collapsed.plateau is False and not collapsed.at_capacity and laws[100].R is None
    (held,) = laws[1000].models
    assert held.plateau is True and held.at_capacity and pytest.approx(1.0) == laws[1000].R


def test_a_late_onset_learner_is_not_at_capacity(tmp_path):
    """A learner with no capacity limit, slow to begin memorising and slower on larger data
    (`synthetic_runs.late_onset`), stores less of larger datasets: bits that rise and then fall
    by a third. That fall is a learning limit; reading it as a plateau would fit a "law"."""
    with ResultsStore(tmp_path / "r.db") as store:
        syn.late_onset(store)
    (law,) = analyse(load_points(tmp_path / "r.db"))
    bits = [p.bits for p in sorted(law.points, key=lambda p: p.n)]
    # the series the rule must see through: up, then down to between half and 90% of the best
    # (the band a plateau rule that only asked for half of the best let through)
    assert bits[0] < bits[1] and 0.5 * bits[1] < bits[2] < 0.9 * bits[1]
    assert all(p.fraction < 0.5 for p in law.points)  # never limited by the data
    (model,) = law.models
    assert model.plateau is False and not model.at_capacity
    assert model.why.startswith("bits fell: N = 6,400 held 69%") and "learning limit" in model.why
    # memorisation began later on more people (at 58, 72 and 90 exposures; seen at the first
    # measurement, every tenth of the run, holding a tenth of the final bits)
    assert model.onset_by_n == {1600: (70.0, False), 3200: (80.0, False), 6400: (100.0, False)}
    assert list(model.bits_by_n.values()) == pytest.approx(bits)
    assert law.R is None and law.slope is None
    assert law.peak_R == pytest.approx(bits[1] / 50_000)


def test_a_plateau_below_a_nearly_stored_smaller_dataset_is_a_capacity(tmp_path):
    """Measured: d 32 at 1000 exposures stored 93% of N = 800 (54.8k bits), then 46.5k of both
    N = 1,600 and 3,200. The plateau is read on the over-filled datasets (flat: a capacity);
    C is the peak, as the paper's, so R is 54.8k / P."""
    with ResultsStore(tmp_path / "r.db") as store:
        for n, R in ((800, 1.096), (1600, 0.93), (3200, 0.93)):  # 54.8k, 46.5k, 46.5k bits
            syn.record(store, n=n, P=50_000, R=R, biod=(8, 1, 128, 1, 128))
    (law,) = analyse(load_points(tmp_path / "r.db"))
    (model,) = law.models
    assert model.at_capacity and model.bits == pytest.approx(54_800) and model.n_at_max == 800
    assert model.why == (
        "at capacity: N = 3,200 held within 10% of the most on a smaller over-filled N (N = 1,600)"
    )
    assert pytest.approx(1.096) == law.R


def test_a_flat_floor_far_below_a_nearly_stored_dataset_is_a_collapse(tmp_path):
    """Stored 95% of N = 100, then nothing (or a sliver) of N = 200 and 400: flat, but a
    collapse of learning on larger data, not a capacity of a few hundred bits."""
    with ResultsStore(tmp_path / "r.db") as store:
        for n, R in ((100, 2.5), (200, 0.0), (400, 0.0)):  # N = 100: 97% stored
            syn.record(store, n=n, P=3_000, R=R, biod=(8, 1, 128, 1, 128))
        for n, R in ((100, 2.5), (200, 0.2), (400, 0.21)):
            syn.record(store, n=n, P=3_100, R=R, biod=(8, 1, 128, 1, 128))
    (law,) = analyse(load_points(tmp_path / "r.db"))
    assert law.n_at_capacity == 0 and law.R is None
    for model in law.models:
        assert model.plateau is False and model.why.startswith("bits collapsed: ")
        assert model.why.endswith("of N = 100: a learning limit, not a capacity")


def test_a_model_at_capacity_that_dips_within_the_noise_keeps_its_plateau(tmp_path):
    """Seed noise of a few percent must not turn a capacity into a learning limit: a model whose
    bits sit within 10% of its best across N is at capacity, with its best as C(m)."""
    with ResultsStore(tmp_path / "r.db") as store:
        for n, R in ((800, 1.0), (1600, 1.06), (3200, 0.97)):  # data holds 74 bits a person
            syn.record(store, n=n, P=50_000, R=R, biod=(8, 1, 128, 1, 128))
        for n, R in ((800, 1.0), (1600, 1.06), (3200, 0.94)):  # 89% of the best: a fall
            syn.record(store, n=n, P=60_000, R=R, biod=(8, 1, 128, 1, 128))
    (law,) = analyse(load_points(tmp_path / "r.db"))
    held, fell = sorted(law.models, key=lambda m: m.P)
    assert held.at_capacity and held.bits == pytest.approx(1.06 * 50_000)
    flat = "at capacity: N = 3,200 held within 10% of the most on a smaller over-filled N"
    assert held.why == flat + " (N = 1,600)"
    assert fell.plateau is False and not fell.at_capacity
    assert fell.why.startswith(
        "bits fell: N = 3,200 held 89% of the most on a smaller over-filled N (N = 1,600)"
    )
    assert pytest.approx(1.06) == law.R


def test_a_law_names_the_scale_settings_of_its_models(tmp_path):
    """A store mixing recipe versions (v2's GPT2 and v3's, which rotates more dims at the same
    width) gives one `gpt2` law whose `variants` say so; a store of one version gives one."""
    floor = {"rotary_min_dims": 16}
    with ResultsStore(tmp_path / "r.db") as store:
        for n in (800, 1600):
            syn.record(store, n=n, P=24_000, R=1.0)
            syn.record(store, n=n, P=32_000, R=1.0, overrides=floor)
    (law,) = analyse(load_points(tmp_path / "r.db"))
    assert law.arch == "gpt2" and law.variants == ["", "rotary_min_dims=16"]
    assert law.to_dict()["variants"] == ["", "rotary_min_dims=16"]
    one = [p for p in law.points if p.variant]
    assert {p.model for p in one} == {"gpt2-2-1,d_model=32,rotary_min_dims=16"}
    assert analyse(one)[0].variants == ["rotary_min_dims=16"]
