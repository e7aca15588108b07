"""Sentence templates of bioS, parsed once into segments ready for fast rendering.

Template syntax (package file ``templates/bios.yaml``): ``<S>`` the subject (full name or He/She),
``<S's>`` the possessive subject (name + 's or His/Her), ``<his>``/``<him>``/``<he>`` pronouns,
``<V>`` the value. A template starts with its subject and holds ``<V>`` exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer", "work_city")
_PLACEHOLDER = re.compile(r"<S's>|<S>|<his>|<him>|<he>|<V>")
PRONOUNS = {  # gender 0 = male, 1 = female
    "<his>": ("his", "her"),
    "<him>": ("him", "her"),
    "<he>": ("he", "she"),
    "<S>": ("He", "She"),
    "<S's>": ("His", "Her"),
}

#: Every gendered form by (capitalised, gender): the first one in a biography carries the gender.
PRONOUN_FORMS = {
    (True, 0): ("He", "His"),
    (True, 1): ("She", "Her"),
    (False, 0): ("he", "his", "him"),
    (False, 1): ("she", "her"),
}
assert {w for pair in PRONOUNS.values() for w in pair} == {
    w for forms in PRONOUN_FORMS.values() for w in forms
}

# Segment kinds of a compiled sentence.
LIT, NAME, VALUE, PRONOUN = 0, 1, 2, 3
Segment = tuple[int, str]  # (kind, text); NAME/VALUE text is the separator before them


@dataclass(frozen=True)
class Template:
    """One parsed template: the raw string and its segments ``(kind, text)`` before rendering."""

    raw: str
    parts: tuple[tuple[str, str], ...]  # (placeholder or "", text before it / literal text)

    def compile(self, gender: int, subject_is_name: bool, lead: bool) -> tuple[Segment, ...]:
        """Segments for one gender and subject mode; ``lead`` prefixes the sentence with a space.

        Spaces before a placeholder move into the placeholder's segment, so every segment
        boundary is a pre-tokenizer boundary.
        """
        out: list[Segment] = []
        pending = " " if lead else ""
        for placeholder, literal in self.parts:
            if not placeholder:
                text = pending + literal
                out.append((LIT, text))
                pending = ""
                continue
            if placeholder == "<V>":
                out.append((VALUE, pending))
            elif placeholder in ("<S>", "<S's>") and subject_is_name:
                out.append((NAME, pending))
                if placeholder == "<S's>":
                    out.append((LIT, "'s"))
            else:
                out.append((PRONOUN, pending + PRONOUNS[placeholder][gender]))
            pending = ""
        # Merge adjacent literals, then move trailing spaces of literals onto the next segment.
        merged: list[Segment] = []
        for kind, text in out:
            if merged and kind == LIT and merged[-1][0] == LIT:
                merged[-1] = (LIT, merged[-1][1] + text)
            else:
                merged.append((kind, text))
        fixed: list[Segment] = []
        carry = ""
        for kind, text in merged:
            text = carry + text
            carry = ""
            if kind == LIT and text.endswith(" "):
                carry, text = " ", text[:-1]
            if kind != LIT or text:
                fixed.append((kind, text))
        if any(k == VALUE and t != " " for k, t in fixed) or any(
            k == NAME and t not in ("", " ") for k, t in fixed
        ):
            raise ValueError(f"a value or name must follow a single space: {self.raw!r}")
        return tuple(fixed)


def parse_template(raw: str) -> Template:
    """Split a template string into (placeholder, literal) parts, validating its shape."""
    if not (raw.startswith("<S>") or raw.startswith("<S's>")):
        raise ValueError(f"template must start with <S> or <S's>: {raw!r}")
    if len(re.findall(r"<V>", raw)) != 1:
        raise ValueError(f"template must hold <V> exactly once: {raw!r}")
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(raw):
        if m.start() > pos:
            parts.append(("", raw[pos : m.start()]))
        parts.append((m.group(0), ""))
        pos = m.end()
    if pos < len(raw):
        parts.append(("", raw[pos:]))
    if "<" in "".join(t for p, t in parts if not p):
        raise ValueError(f"template has an unknown placeholder: {raw!r}")
    return Template(raw, tuple(parts))


@cache
def load_templates() -> dict[str, tuple[Template, ...]]:
    """The package's bioS templates, by attribute, in the order of ``ATTRIBUTES``."""
    text = resources.files("kcap.data").joinpath("templates", "bios.yaml").read_text("utf-8")
    raw = yaml.safe_load(text)
    if list(raw) != list(ATTRIBUTES):
        raise RuntimeError(f"bios.yaml must have keys {ATTRIBUTES}, has {tuple(raw)}")
    return {a: tuple(parse_template(t) for t in raw[a]) for a in ATTRIBUTES}
