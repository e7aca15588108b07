"""bioS generation: spans slice back to the values, variants behave, seeds are deterministic."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kcap.data import pools as P
from kcap.data.bios import BioSPopulation, BioSRenderer, layouts
from kcap.data.documents import GENDER, NAME, label_name
from kcap.data.templates import ATTRIBUTES

PRONOUNS = {"He", "She", "he", "she", "His", "Her", "his", "her", "him"}


def _check_document(pop, renderer, doc, variant):
    text = doc.text
    values = dict(zip(ATTRIBUTES, pop.values(doc.person), strict=True))
    spans = doc.spans()
    names = [s for s in spans if s.label == NAME]
    full = pop.full_name(doc.person)
    assert text.startswith(full)
    assert all(text[s.start : s.end] == full for s in names)
    assert len(names) == (6 if variant == "fullname" else 1)
    if variant != "fullname":
        assert text.count(full) == 1  # the full name only in the first sentence
    for s in spans:
        if s.label == NAME:
            continue
        if s.label == GENDER:
            assert text[s.start : s.end] in PRONOUNS
            word = text[s.start : s.end].lower()
            assert (word in {"she", "her"}) == bool(pop.gender[doc.person])
        else:
            assert text[s.start : s.end] == values[label_name(s.label)]
    value_labels = sorted(s.label for s in spans if s.label not in (NAME, GENDER))
    assert value_labels == list(range(2, 8))  # each of the six attributes exactly once
    genders = [s for s in spans if s.label == GENDER]
    assert len(genders) <= 1
    if variant != "fullname":
        assert len(genders) == 1  # sentences 2..6 start with the pronoun
    assert text.count(".") == 6


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 60),
    variant=st.sampled_from(["online", "simple", "fullname"]),
    exposure=st.integers(0, 1000),
)
def test_spans_slice_back_to_values(seed, n, variant, exposure):
    pop = BioSPopulation.sample(n, seed)
    renderer = BioSRenderer(pop, variant)
    tmpl, order = layouts(n, seed, 1, exposure)
    for p in range(n):
        doc = renderer.render(p, tmpl[p].tolist(), order[p].tolist())
        _check_document(pop, renderer, doc, variant)


def test_names_distinct_and_in_range():
    pop = BioSPopulation.sample(5000, 1)
    assert len(np.unique(pop.name)) == 5000
    assert pop.name.min() >= 0 and pop.name.max() < P.N0
    assert len({pop.full_name(i) for i in range(5000)}) == 5000


def _chi2_bound(df: int) -> float:
    """A chi-square(df) value exceeded with probability 1e-9 by a uniform draw (scipy when
    installed, else the normal approximation mean + 6 sd)."""
    try:
        from scipy.stats import chi2
    except ImportError:
        return df + 6 * np.sqrt(2 * df)
    return float(chi2.isf(1e-9, df))


def test_attributes_uniform_enough():
    """Every attribute, every date part and every name part is uniform over its whole pool.
    Catches an off-by-one range (a pool entry never drawn or one past the end), a biased or
    wrongly decoded draw (e.g. a date whose day depends on its month), a skewed name sampler."""
    pop = BioSPopulation.sample(40000, 2)  # >= 40 expected per cell of the largest pool (1000)
    month, rest = np.divmod(pop.date.astype(np.int64), P.N_DAYS * P.N_YEARS)
    day, year = np.divmod(rest, P.N_YEARS)
    first, middle, last = P.split_name(pop.name)
    checks = {
        "gender": (pop.gender, P.N_GENDERS),
        "birth month": (month, P.N_MONTHS),
        "birth day": (day, P.N_DAYS),
        "birth year": (year, P.N_YEARS),
        "birth month x day": (month * P.N_DAYS + day, P.N_MONTHS * P.N_DAYS),  # 336 cells
        "birth month x year": (month * P.N_YEARS + year, P.N_MONTHS * P.N_YEARS),  # 2400 cells
        "city": (pop.city, P.N_CITIES),
        "university": (pop.university, P.N_UNIVERSITIES),
        "major": (pop.major, P.N_MAJORS),
        "employer": (pop.employer, P.N_COMPANIES),
        "first name": (first, P.N_FIRST),
        "middle name": (middle, P.N_MIDDLE),
        "last name": (last, P.N_LAST),
    }
    assert pop.date.min() >= 0 and pop.date.max() < P.N_DATES
    for what, (arr, k) in checks.items():
        counts = np.bincount(np.asarray(arr, dtype=np.int64), minlength=k)
        assert len(counts) == k, f"{what}: values beyond the pool"
        assert counts.min() > 0, f"{what}: a pool entry is never drawn"
        expected = len(arr) / k
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < _chi2_bound(k - 1), (what, chi2)


def test_population_is_deterministic_and_seed_dependent():
    a, b, c = (
        BioSPopulation.sample(100, 7),
        BioSPopulation.sample(100, 7),
        BioSPopulation.sample(100, 8),
    )
    assert np.array_equal(a.name, b.name) and np.array_equal(a.date, b.date)
    assert not np.array_equal(a.name, c.name)


def test_online_varies_and_simple_is_fixed():
    from kcap.data.bios import BioSSource

    pop = BioSPopulation.sample(20, 0)
    people = np.arange(20)
    online = BioSSource(pop, "online", seed=0)
    simple = BioSSource(pop, "simple", seed=0)
    o0 = [d.text for d in online.documents(0, people)]
    o1 = [d.text for d in online.documents(1, people)]
    s0 = [d.text for d in simple.documents(0, people)]
    s9 = [d.text for d in simple.documents(9, people)]
    assert s0 == s9
    assert sum(a != b for a, b in zip(o0, o1, strict=True)) >= 18


def test_simple_is_measured_on_its_own_biographies(tmp_path):
    """bioS-simple's one fixed biography per person is its whole distribution: evaluation must
    render exactly the training documents (online evaluates on fresh renderings)."""
    from kcap.data.bios import build_bios
    from kcap.data.build import write_dataset
    from kcap.data.dataset import load_dataset

    for variant, same in (("simple", True), ("online", False)):
        write_dataset(tmp_path / variant, *build_bios(20, 1, variant, vocab=400), force=False)
        ds = load_dataset(tmp_path / variant)
        people = np.arange(20)
        train = [d.text for d in ds.source().documents(5, people)]
        evals = [d.text for d in ds.source(eval_=True).documents(0, people)]
        assert (train == evals) == same
