"""The knowledge measure: oracle scores exactly R_max, uniform scores 0, off-by-one is right."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from kcap.data.documents import NAME, OTHER
from kcap.measure.knowledge import measure
from kcap.measure.losses import token_losses
from kcap.models import GPT, preset

BIG = 1e4


class Oracle(nn.Module):
    """Knows every evaluation document. Names: the exact conditional distribution over the N
    names (so -log p(name) = ln N); values and template text: the true token (loss 0) when
    ``knows_values``, else uniform over the vocabulary."""

    def __init__(self, ds, *, knows_values=True, knows_names=True):
        super().__init__()
        self.V = ds.tokenizer.vocab_size
        self.eos = ds.tokenizer.eos_id
        source = ds.source(eval_=True)
        self.docs = []
        for doc in source.documents(0, np.arange(ds.n)):
            ids, labels, _ = ds.tokenizer.encode_pieces(doc.pieces)
            self.docs.append((ids, labels))
        self.names = [
            tuple(i for i, lab in zip(ids, labels, strict=True) if lab == NAME)[:1000]
            for ids, labels in self.docs
        ]
        self.knows_values, self.knows_names = knows_values, knows_names

    def forward(self, idx):
        B, T = idx.shape
        out = torch.zeros(B, T, self.V)
        for b in range(B):
            row = idx[b].tolist()
            doc = next(d for d in self.docs if row[1 : 1 + len(d[0])] == d[0][: T - 1])
            ids, labels = doc
            n_name = next(i for i, lab in enumerate(labels) if lab != NAME)
            for t in range(min(T, len(ids))):  # position t predicts ids[t]
                if t < n_name:
                    if self.knows_names:
                        prefix = tuple(ids[:t])
                        counts = np.zeros(self.V)
                        for name in self.names:
                            if name[:t] == prefix:
                                counts[name[t]] += 1
                        out[b, t] = torch.log(torch.as_tensor(counts, dtype=torch.float32))
                elif labels[t] == OTHER or self.knows_values:
                    out[b, t, ids[t]] = BIG
        return out


@pytest.mark.parametrize("fixture", ["bios_ds", "biod_ds"])
def test_oracle_scores_exactly_r_max(fixture, request):
    ds = request.getfixturevalue(fixture)
    r = measure(Oracle(ds), ds, P_count=1000, batch_size=16)
    assert r.p1 == pytest.approx(math.log(ds.n), rel=1e-5)
    assert r.p2 == pytest.approx(0.0, abs=1e-6)
    assert r.bits["total"] == pytest.approx(ds.bits["total"], rel=1e-6)
    assert pytest.approx(r.R_max, rel=1e-6) == r.R
    assert r.recall_accuracy == 1.0
    assert not r.clipped


@pytest.mark.parametrize("fixture", ["bios_ds", "biod_ds"])
def test_uniform_model_scores_zero(fixture, request):
    ds = request.getfixturevalue(fixture)

    class Uniform(nn.Module):
        def forward(self, idx):
            return torch.zeros(*idx.shape, ds.tokenizer.vocab_size)

    r = measure(Uniform(), ds, P_count=1000)
    assert r.bits["total"] == 0.0
    assert "name" in r.clipped and "value" in r.clipped
    assert 0.0 <= r.recall_accuracy <= 1.0


def test_names_only_model_scores_the_name_term(bios_ds):
    r = measure(Oracle(bios_ds, knows_values=False), bios_ds, P_count=1000)
    assert r.bits["name"] == pytest.approx(bios_ds.bits["name"], rel=1e-6)
    assert r.bits["value"] == 0.0 and r.clipped == ["value"]
    assert r.bits["total"] == pytest.approx(bios_ds.bits["name"], rel=1e-6)


def test_span_losses_off_by_one(bios_ds):
    """Position t's logits predict token t+1: check against prefix-by-prefix forward passes."""
    torch.manual_seed(0)
    model = GPT(preset("gpt2-1-1", bios_ds.tokenizer.vocab_size, d_model=32, context=256)).eval()
    tok = bios_ds.tokenizer
    docs = [
        tok.encode_pieces(d.pieces) for d in bios_ds.source(eval_=True).documents(0, np.arange(3))
    ]
    losses, hits, _ = token_losses(model, [d[0] for d in docs], tok.eos_id, torch.device("cpu"))
    for (ids, labels, _), nll, hit in zip(docs, losses, hits, strict=True):
        full = [tok.eos_id, *ids]
        for i in [0, 1, 5, len(ids) - 1]:
            with torch.no_grad():
                logits = model(torch.tensor([full[: i + 1]]))[0, -1]
            expected = -torch.log_softmax(logits, -1)[ids[i]].item()
            assert nll[i] == pytest.approx(expected, abs=1e-4)
            assert hit[i] == (int(logits.argmax()) == ids[i])
        # the name loss is the sum over exactly the name tokens at the start
        n_name = sum(1 for lab in labels if lab == NAME)
        assert labels[:n_name] == [NAME] * n_name
        assert nll[:n_name].sum() == pytest.approx(float(nll[np.array(labels) == NAME].sum()))


def test_r_never_exceeds_r_max_for_a_random_model(bios_ds):
    torch.manual_seed(1)
    model = GPT(preset("gpt2-1-1", bios_ds.tokenizer.vocab_size, d_model=32, context=256))
    r = measure(model, bios_ds, P_count=5000)
    assert 0.0 <= r.R <= r.R_max
    assert 0.0 <= r.recall_accuracy <= 1.0


def test_gender_is_read_across_pronoun_forms(tmp_path):
    """A model sure of the gender but unsure which template form follows ("She" or "Her")
    stores the gender bit fully; the raw token loss would have charged it ln 2."""
    from kcap.data.dataset import build_bios, load_dataset, write_dataset
    from kcap.data.documents import GENDER
    from kcap.measure.knowledge import PRONOUN_FORMS

    write_dataset(tmp_path / "ds", *build_bios(30, seed=4, vocab=1500), force=False)
    bios_ds = load_dataset(tmp_path / "ds")
    tok = bios_ds.tokenizer
    forms = [w for f in PRONOUN_FORMS.values() for w in f]
    assert all(len(tok.piece_ids(" " + w)) == 1 for w in forms)  # every form is one token

    class FormBlind(Oracle):
        def forward(self, idx):
            out = super().forward(idx)
            for b in range(idx.shape[0]):
                row = idx[b].tolist()
                ids, labels = next(
                    d for d in self.docs if row[1 : 1 + len(d[0])] == d[0][: len(row) - 1]
                )
                t = labels.index(GENDER)
                word = tok.decode([ids[t]])
                forms = next(f for f in PRONOUN_FORMS.values() if word.strip() in f)
                out[b, t] = 0.0
                for w in forms:
                    out[b, t, tok.piece_ids(" " + w)[0]] = BIG
            return out

    exact = measure(Oracle(bios_ds), bios_ds, P_count=1000)
    blind = measure(FormBlind(bios_ds), bios_ds, P_count=1000)
    assert blind.loss_per_attribute["gender"] == pytest.approx(0.0, abs=1e-6)
    assert blind.bits_per_attribute["gender"] == pytest.approx(bios_ds.n, rel=1e-6)
    assert blind.bits["total"] == pytest.approx(exact.bits["total"], rel=1e-9)
    assert blind.recall_per_attribute["gender"] == 1.0
