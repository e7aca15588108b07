"""Question-answer pairs for bioS (six questions per person, SPEC §2), for the extraction probe."""

from __future__ import annotations

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


def qa_pairs(population: BioSPopulation, person: int) -> list[tuple[str, str, str]]:
    """(attribute, question, answer) for each of the six attributes of ``person``."""
    name = population.full_name(person)
    values = population.values(person)
    return [(a, QUESTIONS[a].format(name=name), v) for a, v in zip(ATTRIBUTES, values, strict=True)]


def qa_text(question: str, answer: str) -> str:
    """The training text of one QA pair: "Q: ... A: answer"."""
    return f"Q: {question} A: {answer}"
