"""Tokenization: piece-wise encoding equals whole-text encoding; the span-to-token rule."""

import numpy as np
import pytest

from kcap.data.bios import BioSPopulation, BioSSource
from kcap.data.documents import OTHER
from kcap.tokenization.tokenizer import KTokenizer, token_range


def test_token_range_overlap_rule():
    text = "Anya Briar was born in Zo"
    # tokens: "Anya"(0,4) " Briar"(4,10) " was"(10,14) " born"(14,19) " in"(19,22) " "(22,23) "Zo"
    offsets = np.array([[0, 4], [4, 10], [10, 14], [14, 19], [19, 22], [22, 23], [23, 25]])
    assert token_range(text, offsets, 0, 4) == (0, 1)
    assert token_range(text, offsets, 5, 10) == (1, 2)  # the leading space is in the token
    assert token_range(text, offsets, 5, 14) == (1, 3)
    assert token_range(text, offsets, 6, 8) == (1, 2)  # a token partly covering the span belongs
    assert token_range(text, offsets, 23, 25) == (5, 7)  # a lone leading-space token belongs
    assert token_range(text, offsets, 25, 25) == (7, 7)


def _labels_by_overlap(tok, doc):
    ids, offsets = tok.encode(doc.text)
    labels = np.zeros(len(ids), dtype=int)
    for span in doc.spans():
        a, b = token_range(doc.text, offsets, span.start, span.end)
        labels[a:b] = span.label
    return ids, labels


@pytest.mark.parametrize("kind", ["bpe", "word"])
@pytest.mark.parametrize("variant", ["online", "fullname"])
def test_piece_encoding_equals_text_encoding(kind, variant):
    pop = BioSPopulation.sample(200, 11)
    source = BioSSource(pop, variant, seed=4)
    docs = list(source.documents(3, np.arange(200)))
    tok = KTokenizer.train((d.text for d in docs[:100]), vocab_size=700, kind=kind)
    for doc in docs:
        ids, labels, _ = tok.encode_pieces(doc.pieces)
        ref_ids, ref_labels = _labels_by_overlap(tok, doc)
        assert ids == ref_ids, doc.text
        # the stream's labels equal the SPEC rule: a token overlapping a value's span belongs to it
        # (pronouns after the first are template text)
        assert [lab for lab in labels] == list(ref_labels), doc.text
        assert labels[0] != OTHER  # the name opens every document


def test_eos_is_special_and_single(bios_ds):
    tok = bios_ds.tokenizer
    ids, _ = tok.encode("Anya<|eos|>Bob")
    assert ids.count(tok.eos_id) == 1


def test_biod_symbols_are_single_tokens(biod_ds):
    tok = biod_ds.tokenizer
    pop = biod_ds.population
    source = biod_ds.source()
    for doc in source.documents(0, np.arange(5)):
        ids, labels, _ = tok.encode_pieces(doc.pieces)
        assert ids == tok.encode(doc.text)[0]
        value_tokens = [i for i, lab in enumerate(labels) if lab >= 16]
        p = pop.params
        assert len(value_tokens) == p.k * p.c * p.l  # every chunk is exactly L tokens


def test_save_load_roundtrip(tmp_path, bios_ds):
    path = tmp_path / "tok.json"
    bios_ds.tokenizer.save(path)
    tok = KTokenizer.load(path)
    text = "Anya Briar Forger was born on October 2, 1996."
    assert tok.encode(text)[0] == bios_ds.tokenizer.encode(text)[0]
    assert tok.kind == bios_ds.tokenizer.kind and tok.eos_id == bios_ds.tokenizer.eos_id
