"""bioR (paper §2.2, SPEC §2): bioS people's biographies rewritten by a generative LM.

Pipeline (`generate_rewrites`): each person's six facts go into a prompt in the format of Part
3.1 ("Write a 50 words biography about a person whose name is ...", fact sentences in a random
order, phrasing varied), with the pronouns to use, and the answer is opened with the person's
full name, so the rewrite is the name plus the model's continuation (its first paragraph,
whitespace collapsed). A rewrite is kept only if `find_spans` finds every one of the six values
verbatim (exact case, as whole words) and its first gendered pronoun, if any, agrees with the
person's gender; otherwise the person is prompted again, up to ``max_tries`` prompts. Each person
keeps ``rewrites + 1`` accepted texts: the first is held out for evaluation, the others (up to
``rewrites``, 40 in the paper) are trained on. A person with fewer than two accepted texts falls
back to bioS template biographies (counted in the manifest: with a real LM this is rare; with
the tiny random models of the tests it is everyone).

Any local Hugging Face causal LM directory can write (`HFRewriter`; ``local_files_only``, so
nothing is downloaded); anything with the `Rewriter` call signature can stand in for it.

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

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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


class Rewriter(Protocol):
    """Writes one continuation per prompt; ``seed`` makes a call reproducible."""

    def __call__(self, prompts: Sequence[str], seed: int) -> list[str]: ...


# ----------------------------------------------------------------------------- prompts, spans


def make_prompt(name: str, values: Sequence[str], gender: int, rng: np.random.Generator) -> str:
    """A prompt with the six facts in a random order, ending with the answer's opening: the
    full name (so every rewrite starts with it)."""
    words = WORDS[rng.integers(len(WORDS))]
    lines = [INSTRUCTIONS[rng.integers(len(INSTRUCTIONS))].format(words=words, name=name)]
    for a in rng.permutation(len(ATTRIBUTES)).tolist():
        options = FACTS[ATTRIBUTES[a]]
        lines.append(options[rng.integers(len(options))].format(v=values[a]))
    he, him = ("he", "him") if gender == 0 else ("she", "her")
    lines.append(PRONOUN_NOTE[rng.integers(len(PRONOUN_NOTE))].format(he=he, him=him))
    return " ".join(lines) + f"\n\nBiography: {name}"


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


# ----------------------------------------------------------------------------- generation


class HFRewriter:
    """A local Hugging Face causal LM that samples continuations (nothing is downloaded)."""

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        max_new_tokens: int = 160,
        temperature: float = 1.0,
        top_p: float = 0.95,
    ):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        transformers.utils.logging.disable_progress_bar()

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise KcapError("--device", f"{device} requested but no CUDA device is available")
        self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        self.model.to(self.device).eval()
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            if self.tok.eos_token is None:
                raise KcapError("--model", f"{path}: the tokenizer has neither pad nor eos token")
            self.tok.pad_token = self.tok.eos_token
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p

    def __call__(self, prompts: Sequence[str], seed: int) -> list[str]:
        torch = self.torch
        enc = self.tok(list(prompts), return_tensors="pt", padding=True).to(self.device)
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
                )
        # Decode prompt and prompt + continuation, and keep the difference: decoding the new
        # tokens alone loses the space a sentencepiece word token (LLaMA's "▁was") carries.
        full = self.tok.batch_decode(out, skip_special_tokens=True)
        heads = self.tok.batch_decode(enc["input_ids"], skip_special_tokens=True)
        new = self.tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return [
            f[len(h) :] if f.startswith(h) else n for f, h, n in zip(full, heads, new, strict=True)
        ]


@dataclass
class RewriteStats:
    tries: int = 0
    accepted: int = 0
    fallback_people: int = 0

    def to_dict(self, rewrites: Rewrites) -> dict:
        counts = np.diff(rewrites.person_offsets) - 1
        real = ~rewrites.fallback
        return {
            "tries": self.tries,
            "accepted": self.accepted,
            "acceptance_rate": self.accepted / max(self.tries, 1),
            "fallback_people": self.fallback_people,
            "training_rewrites_min": int(counts[real].min()) if real.any() else 0,
            "training_rewrites_mean": float(counts[real].mean()) if real.any() else 0.0,
        }


def generate_rewrites(
    people: BioSPopulation,
    rewriter: Rewriter,
    *,
    rewrites: int = 40,
    max_tries: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: Progress = None,
) -> tuple[Rewrites, RewriteStats]:
    """Rewrite every person ``rewrites + 1`` times by rejection sampling (see the module doc).

    Prompts are issued in rounds, one per person still short of texts, in batches of
    ``batch_size``; round r's prompt choices and batch seeds are keyed by (seed, r), so the
    result is a function of (people, rewriter, arguments)."""
    need = rewrites + 1
    max_tries = 4 * need if max_tries is None else max_tries
    n = people.n
    names = [people.full_name(i) for i in range(n)]
    values = [people.values(i) for i in range(n)]
    accepted: list[list[tuple[str, np.ndarray]]] = [[] for _ in range(n)]
    stats = RewriteStats()
    for r in range(max_tries):
        pending = [i for i in range(n) if len(accepted[i]) < need]
        if not pending:
            break
        rng = rng_for(seed, TAG_BIOR_PROMPT, r)
        prompts = [make_prompt(names[i], values[i], int(people.gender[i]), rng) for i in pending]
        seeds = rng.integers(0, 2**31, -(-len(pending) // batch_size)).tolist()
        for b, start in enumerate(range(0, len(pending), batch_size)):
            chunk = pending[start : start + batch_size]
            outs = rewriter(prompts[start : start + batch_size], seeds[b])
            for i, out in zip(chunk, outs, strict=True):
                stats.tries += 1
                text = rewrite_text(names[i], out)
                spans = find_spans(text, names[i], values[i], int(people.gender[i]))
                if spans is not None:
                    stats.accepted += 1
                    accepted[i].append((text, _span_rows(spans)))
        say(progress, f"rewriting: round {r + 1}, {stats.accepted:,} of {n * need:,} kept")
    fallback = np.array([len(a) < 2 for a in accepted], dtype=bool)
    stats.fallback_people = int(fallback.sum())
    if fallback.any():
        _fill_fallback(people, accepted, np.flatnonzero(fallback), rewrites, seed)
    texts = [t for person in accepted for t, _ in person]
    spans = np.stack([s for person in accepted for _, s in person]).astype(np.int32)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in accepted])
    return Rewrites(texts, spans, offsets, fallback), stats


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


def check_bior(
    n: int,
    model: str | Path | None,
    seed: int = 0,
    *,
    rewrites: int = 40,
    max_tries: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    max_new_tokens: int = 160,
    temperature: float = 1.0,
    top_p: float = 0.95,
    vocab: int = 2048,
    tokenizer: str = "bpe",
    rewriter: Rewriter | None = None,
) -> None:
    """Refuse bad arguments of `build_bior` (a `KcapError` naming the flag); ``model`` must be a
    local Hugging Face model directory unless a ``rewriter`` writes instead."""
    require(1 <= n <= P.N0, "--n", f"must be between 1 and N0 = {P.N0:,}; got {n}")
    require(rewrites >= 1, "--rewrites", f"must be a positive integer; got {rewrites}")
    require(
        max_tries is None or max_tries >= rewrites + 1,
        "--max-tries",
        f"must be at least rewrites + 1 = {rewrites + 1}; got {max_tries}",
    )
    if model is not None and rewriter is None:
        path = Path(model)
        require(path.is_dir(), "--model", f"{path} is not a directory (a local HF model)")
        require(
            (path / "config.json").is_file(),
            "--model",
            f"{path} has no config.json (not a Hugging Face model directory)",
        )
    require(batch_size >= 1, "--batch-size", f"must be a positive integer; got {batch_size}")
    require(max_new_tokens >= 1, "--max-new-tokens", f"must be positive; got {max_new_tokens}")
    require(temperature > 0, "--temperature", f"must be positive; got {temperature}")
    require(0 < top_p <= 1, "--top-p", f"must be in (0, 1]; got {top_p}")
    require(
        device == "cpu" or device.startswith("cuda"), "--device", f"cpu or cuda; got {device!r}"
    )
    check_tokenizer_args(tokenizer, vocab)


def build_bior(
    n: int,
    model: str | Path | None,
    seed: int = 0,
    *,
    rewrites: int = 40,
    max_tries: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    max_new_tokens: int = 160,
    temperature: float = 1.0,
    top_p: float = 0.95,
    vocab: int = 2048,
    tokenizer: str = "bpe",
    rewriter: Rewriter | None = None,
    progress: Progress = None,
) -> tuple[dict, BioSPopulation, KTokenizer, dict]:
    """Sample the people (those of ``build_bios(n, seed)``), rewrite them with the LM at
    ``model`` (or ``rewriter``), train the tokenizer, and compute the manifest."""
    check_bior(
        n,
        model,
        seed,
        rewrites=rewrites,
        max_tries=max_tries,
        batch_size=batch_size,
        device=device,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        vocab=vocab,
        tokenizer=tokenizer,
        rewriter=rewriter,
    )
    say(progress, "sampling population")
    people = BioSPopulation.sample(n, seed)
    if rewriter is None:
        say(progress, f"loading {model}")
        rewriter = HFRewriter(
            model,
            device=device,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
        )
    store, stats = generate_rewrites(
        people,
        rewriter,
        rewrites=rewrites,
        max_tries=max_tries,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    say(progress, "training tokenizer")
    sample_end = int(store.person_offsets[min(n, TOKENIZER_SAMPLE)])
    texts = [*store.texts[:sample_end], *pool_texts(names=True)]
    tok = KTokenizer.train(texts, vocab_size=vocab, kind=tokenizer)
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
        "rewrites": rewrites,
        "model": None if model is None else str(model),
        "max_tries": 4 * (rewrites + 1) if max_tries is None else max_tries,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
    }
    bits = bios_bits(n)
    manifest = make_manifest("bior", params, seed, bits, tok, used, docs, list(ATTRIBUTES))
    manifest["rewriting"] = stats.to_dict(store)
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
    "BioRSource",
    "HFRewriter",
    "Rewrites",
    "build_bior",
    "find_spans",
    "generate_rewrites",
    "make_prompt",
]
