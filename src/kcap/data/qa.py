"""Question-answer pairs for the extraction probe (SPEC §2 QA; paper §1.6): six per bioS person,
and, our addition, K per bioD person.

bioS: the paper's six questions ("What is the birth date of {name}?" -> "October 2, 1996").
bioD: the paper has no QA for bioD; ours is one question per attribute, "What is ID 3 of
{name}?", answered by the value's C chunks exactly as the biographies write them
(`BIOD_QUESTION`).

A QA pair is trained and scored as the text ``Q: {question} A: {answer}``. `QA` keeps the
answer's pieces as the biographies render them (" Princeton, NJ"; a bioD chunk per piece), so
the answer tokenizes exactly as the value does in a biography.
"""

from __future__ import annotations

from dataclasses import dataclass

from kcap.data.biod import BioDPopulation
from kcap.data.bios import BioSPopulation
from kcap.data.templates import ATTRIBUTES

QUESTIONS = {
    "birth_date": "What is the birth date of {name}?",
    "birth_city": "What is the birth city of {name}?",
    "university": "Which university did {name} study?",
    "major": "What major did {name} study?",
    "employer": "Which company did {name} work for?",
    "work_city": "Where did {name} work?",
}
#: Our bioD question (not the paper's: it has no bioD QA); {k} counts from 1, as "ID k" does.
BIOD_QUESTION = "What is ID {k} of {name}?"


@dataclass(frozen=True)
class QA:
    """One question about one person: the attribute it asks (a bioS attribute or "ID k"), the
    question, and the answer's pieces as biographies render them (each with its leading
    space)."""

    attribute: str
    question: str
    answer_pieces: tuple[str, ...]

    @property
    def answer(self) -> str:
        return "".join(self.answer_pieces).strip()

    @property
    def prompt(self) -> str:
        """What the model is given: everything before the answer."""
        return f"Q: {self.question} A:"

    @property
    def text(self) -> str:
        return qa_text(self.question, self.answer)


def qa_pairs(population: BioSPopulation, person: int) -> list[tuple[str, str, str]]:
    """(attribute, question, answer) for each of the six attributes of ``person``."""
    name = population.full_name(person)
    values = population.values(person)
    return [(a, QUESTIONS[a].format(name=name), v) for a, v in zip(ATTRIBUTES, values, strict=True)]


def biod_attributes(population: BioDPopulation) -> list[str]:
    """The attribute names of a bioD population, "ID 1" .. "ID K" (the measure's labels)."""
    return [f"ID {a + 1}" for a in range(population.params.k)]


def qa_items(population: BioSPopulation | BioDPopulation, person: int) -> list[QA]:
    """Every QA pair of ``person``: bioS's six, or bioD's K."""
    if isinstance(population, BioDPopulation):
        name = population.full_name(person)
        return [
            QA(
                f"ID {a + 1}",
                BIOD_QUESTION.format(k=a + 1, name=name),
                tuple(" " + population.chunk_text(a, int(c)) for c in population.values[person, a]),
            )
            for a in range(population.params.k)
        ]
    return [QA(a, q, (" " + v,)) for a, q, v in qa_pairs(population, person)]


def qa_text(question: str, answer: str) -> str:
    """The training text of one QA pair: "Q: ... A: answer"."""
    return f"Q: {question} A: {answer}"
