"""The value pools and templates: exact sizes, uniqueness, and the tokenizer-safety rules."""

import re

import pytest

from kcap.data import pools as P
from kcap.data.pools import load_pools
from kcap.data.templates import ATTRIBUTES, load_templates

SIZES = {
    "first": 400,
    "middle": 400,
    "last": 1000,
    "cities": 200,
    "universities": 300,
    "majors": 100,
    "companies": 263,
    "company_hq": 263,
}


@pytest.mark.parametrize("field", list(SIZES))
def test_pool_sizes(field):
    values = getattr(load_pools(), field)
    assert len(values) == SIZES[field]
    if field != "company_hq":  # several companies share a headquarters city
        assert len(set(values)) == len(values)
        assert len({v.lower() for v in values}) == len(values)


def test_names_are_single_words():
    pools = load_pools()
    for v in (*pools.first, *pools.middle, *pools.last):
        assert re.fullmatch(r"[A-Z][A-Za-z]+", v), v


def test_values_are_tokenizer_safe():
    pools = load_pools()
    for v in (
        *pools.cities,
        *pools.universities,
        *pools.majors,
        *pools.companies,
        *pools.company_hq,
    ):
        assert v.isascii() and v == v.strip() and "  " not in v and "." not in v, v
        assert v[0].isalnum() and v[-1].isalnum(), v
    for city in (*pools.cities, *pools.company_hq):
        assert re.fullmatch(r"[A-Za-z .'-]+(?: [A-Za-z.'-]+)*, [A-Z]{2}", city), city


def test_dates():
    assert P.format_date(9, 1, 96) == "October 2, 1996"
    assert P.format_date(0, 27, 199) == "January 28, 2099"


def test_templates_shape():
    templates = load_templates()
    assert tuple(templates) == ATTRIBUTES
    for attribute, ts in templates.items():
        assert len(ts) >= 40, attribute
        assert len({t.raw for t in ts}) == len(ts), attribute
        for t in ts:
            assert t.raw.endswith(".") and t.raw.count(".") == 1, t.raw
            assert " <V>" in t.raw and "<V>'" not in t.raw, t.raw
            assert t.raw.isascii() and "  " not in t.raw, t.raw


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_every_template_renders_every_value(attribute):
    """Each template, for each gender and subject mode, renders each pool value verbatim."""
    pools = load_pools()
    values = {
        "birth_date": [
            P.format_date(m, d, y) for m in range(12) for d in (0, 27) for y in (0, 199)
        ],
        "birth_city": pools.cities,
        "university": pools.universities,
        "major": pools.majors,
        "employer": pools.companies,
        "work_city": pools.company_hq,
    }[attribute]
    from kcap.data.templates import NAME, PRONOUN, VALUE

    for t in load_templates()[attribute]:
        for gender in (0, 1):
            for subject_is_name in (True, False):
                segments = t.compile(gender, subject_is_name, lead=True)
                kinds = [k for k, _ in segments]
                assert kinds.count(VALUE) == 1
                assert (NAME in kinds) == subject_is_name
                if not subject_is_name:
                    assert segments[0][0] == PRONOUN
                for v in values:
                    text = "".join(
                        s + v if k == VALUE else s + "Anya Briar Forger" if k == NAME else s
                        for k, s in segments
                    )
                    assert f" {v}" in text and text.startswith(" ") and text.endswith(".")
                    assert "  " not in text and "<" not in text
