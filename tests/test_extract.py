"""The knowledge-extraction probe (`kcap extract`, `kcap.measure.extract`, issue 15 part 1).

What is checked: the held-out half never reaches the optimizer (the batches it is fed are
inspected), the QA loss targets the answer and its closing ``<|eos|>`` only, an untrained model
extracts at chance, a memorised model trained on augmented bioS (the online variant: fresh
templates and sentence order every exposure) extracts most of what it memorised, the LoRA
adapters start as the identity and touch only q and v, the QA answers tokenize as the
biographies' values, the store keeps old databases readable, and the command end to end
(extract.json, the store row, `kcap report`) and its refusals.

The memorised model is trained once for this module (about a minute on one core): a 2-layer
d-64 GPT on bioS(40) (word tokens), 200 exposures at lr 5e-3. Measured when this test was
written: recall 89%, extractable 84% with chance 8%.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tests.tiny import tiny_run
from typer.testing import CliRunner

from kcap.cli.main import app
from kcap.data.bios import ATTRIBUTE_LABELS, build_bios
from kcap.data.build import write_dataset
from kcap.data.dataset import load_dataset
from kcap.data.documents import VALUE_BASE
from kcap.data.qa import qa_items
from kcap.data.templates import ATTRIBUTES
from kcap.errors import KcapError
from kcap.experiments.store import SCHEMA_VERSION, ResultsStore
from kcap.measure.extract import (
    IGNORE,
    ExtractSettings,
    batch_tensors,
    encode,
    examples_of,
    extract,
    split_people,
)
from kcap.measure.lora import LoRAColumns, add_lora, lora_parameters
from kcap.models import GPT, preset
from kcap.training.config import parse_config
from kcap.training.trainer import Trainer

runner = CliRunner()
#: Short fine-tuning for the tiny-model tests (the defaults run 600 steps of 96).
QUICK = ExtractSettings(qv_rank=16, lr=3e-3, steps=150, batch_size=32)


def _random_model(dataset, d: int = 32, layers: int = 1) -> GPT:
    torch.manual_seed(0)
    return GPT(preset(f"gpt2-{layers}-1", dataset.tokenizer.vocab_size, d_model=d, context=64))


def _cli(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """(dataset, trained model, its final measurement) of the memorised run described above."""
    root = tmp_path_factory.mktemp("memorised")
    write_dataset(root / "ds", *build_bios(40, seed=3, vocab=600, tokenizer="word"), force=True)
    raw = tiny_run(root / "ds", exposures=200, batch_size=8, lr=5e-3, log_every=1000)
    raw["model"] = {"preset": "gpt2-2-1", "overrides": {"d_model": 64}}
    trainer = Trainer(parse_config(raw), root / "run", progress=False)
    result = trainer.fit()
    return load_dataset(root / "ds"), trainer.model, result


@pytest.fixture(scope="module")
def runs(tmp_path_factory, bios_dir, random_dir):
    """Two tiny bioS runs (seeds 0, 1) recorded in a store; a random-strings run and a bioS run
    that were never measured (a checkpoint at step 0)."""
    root = tmp_path_factory.mktemp("runs")
    db = root / "k.db"
    out = {}
    for seed in (0, 1):
        cfg = root / f"c{seed}.yaml"
        cfg.write_text(yaml.safe_dump(tiny_run(bios_dir, exposures=1, seed=seed, log_every=50)))
        r = _cli("train", cfg, "--out", root / f"run{seed}", "--db", db)
        assert r.exit_code == 0, r.output
        out[seed] = root / f"run{seed}"
    for name, data in (("random", random_dir), ("unmeasured", bios_dir)):
        cfg = parse_config(tiny_run(data, exposures=1))
        Trainer(cfg, root / name, progress=False).save_checkpoint()  # a checkpoint, no measure
    return {"db": db, "bios": out, "random": root / "random", "unmeasured": root / "unmeasured"}


# ------------------------------------------------------------------------------ the split, the loss


def test_split_is_deterministic_disjoint_and_complete():
    a, b = split_people(41, seed=7)
    assert len(a) == 20 and len(b) == 21
    assert set(a).isdisjoint(b) and set(a) | set(b) == set(range(41))
    again = split_people(41, seed=7)
    assert np.array_equal(a, again[0]) and np.array_equal(b, again[1])
    assert not np.array_equal(a, split_people(41, seed=8)[0])


def test_held_out_people_never_reach_the_optimizer(bios_ds):
    train, held_out = split_people(bios_ds.n, QUICK.seed)
    tok = bios_ds.tokenizer
    seen_people: set[int] = set()
    texts: list[str] = []

    def spy(batch, x, y):
        seen_people.update(e.person for e in batch)
        texts.extend(tok.decode(row.tolist()) for row in x)
        texts.extend(tok.decode([t for t in row.tolist() if t != IGNORE]) for row in y)

    settings = ExtractSettings(qv_rank=4, steps=8, batch_size=16)  # 128 >= 120 pairs: a pass
    extract(_random_model(bios_ds), bios_ds, settings, on_batch=spy)
    assert seen_people == set(train.tolist())  # every fine-tuning person, and no one else
    pop = bios_ds.population
    for p in held_out:
        name = pop.full_name(int(p))
        assert not any(name in t for t in texts), name
    assert any(pop.full_name(int(train[0])) in t for t in texts)  # the check can see names


def test_qa_loss_targets_only_the_answer_and_its_end(bios_ds):
    tok = bios_ds.tokenizer
    examples = examples_of(bios_ds, np.array([0, 1]))
    x, y = batch_tensors(examples, tok.eos_id)
    for i, e in enumerate(examples):
        qa = next(q for q in qa_items(bios_ds.population, e.person) if q.attribute == e.attribute)
        prompt = list(tok.piece_ids(qa.prompt))
        answer = list(tok.piece_ids(" " + qa.answer))
        targets = y[i][y[i] != IGNORE].tolist()
        assert targets == [*answer, tok.eos_id]
        # the question: the input up to the answer, never a target
        assert x[i, : 1 + len(prompt)].tolist() == [tok.eos_id, *prompt]
        assert (y[i, : len(prompt)] == IGNORE).all()
        assert tok.decode(targets[:-1]).strip() == qa.answer
    # a padded (shorter) row has no targets past its end
    short = min(range(len(examples)), key=lambda i: len(examples[i].ids))
    n = len(examples[short].ids) - 1
    assert (y[short, n:] == IGNORE).all()


def test_answers_tokenize_as_the_biographies_values(bios_ds, biod_ds):
    for ds, label_of in (
        (bios_ds, dict(zip(ATTRIBUTES, ATTRIBUTE_LABELS, strict=True))),
        (biod_ds, {f"ID {a + 1}": VALUE_BASE + a for a in range(3)}),
    ):
        doc = next(ds.source(eval_=True).documents(0, np.array([3])))
        ids, labels, _ = ds.tokenizer.encode_pieces(doc.pieces)
        for qa in qa_items(ds.population, 3):
            e = encode(ds.tokenizer, 3, qa)
            value = [t for t, lab in zip(ids, labels, strict=True) if lab == label_of[qa.attribute]]
            assert e.ids[-e.n_answer : -1] == value, qa.attribute


# ------------------------------------------------------------------------------ LoRA


def test_lora_starts_as_the_identity_and_adapts_only_q_and_v(bios_ds):
    model = _random_model(bios_ds, d=32, layers=2)
    x = torch.randint(0, bios_ds.tokenizer.vocab_size, (2, 10))
    before = model(x).detach()
    ranks = add_lora(model, embedding_rank=128, qv_rank=8)
    assert (ranks.embedding, ranks.qv) == (32, 8)  # the embedding rank capped at d
    assert torch.allclose(model(x), before)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(model)}
    assert model.lm_head.weight is model.wte.base.weight  # the tied head: frozen, unchanged
    qkv = model.blocks[0].attn.qkv
    assert isinstance(qkv, LoRAColumns)
    for b in qkv.lora_B:
        torch.nn.init.normal_(b)
    h = torch.randn(3, 32)
    delta = qkv(h) - qkv.base(h)
    assert (delta[:, :32] != 0).all() and (delta[:, 64:] != 0).all()  # q and v moved
    assert (delta[:, 32:64] == 0).all()  # k did not


# ------------------------------------------------------------------------------ the probe


def test_untrained_model_extracts_at_chance_and_is_left_untouched(bios_ds):
    model = _random_model(bios_ds)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    r = extract(model, bios_ds, QUICK)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert r.memorisable["overall"] < 0.05
    ext, chance = r.extractable, r.chance
    assert ext["overall"] <= chance["overall"] + 0.05, (ext, chance)
    for a in ATTRIBUTES:
        assert ext["per_attribute"][a] <= chance["per_attribute"][a] + 0.1, a
        assert chance["per_attribute"][a] >= chance["uniform"][a]
    assert r.split == {
        **r.split,
        "finetune_people": 20,
        "held_out_people": 20,
    }
    assert r.finetune["steps"] == 150 and r.finetune["method"] == "lora"


def test_untrained_model_reaches_chance_and_no_more_where_chance_is_high(tmp_path):
    """bioD with 3 values per attribute: a random model fully fine-tuned learns the answers'
    distribution (measured: 40% held out against 45% chance, uniform 33%), never the people."""
    from kcap.data.biod import BioDParams, build_biod

    write_dataset(
        tmp_path / "ds", *build_biod(BioDParams(60, 2, 1, 3, 1, 8), seed=5, vocab=400), force=False
    )
    ds = load_dataset(tmp_path / "ds")
    settings = ExtractSettings(method="full", lr=3e-3, steps=150, batch_size=16)
    r = extract(_random_model(ds), ds, settings)
    ext, chance = r.extractable["overall"], r.chance["overall"]
    assert r.memorisable["overall"] == 0.0
    assert chance - 0.15 <= ext <= chance + 0.1, (ext, chance)
    assert r.chance["uniform"]["ID 1"] == pytest.approx(1 / 3)


def test_memorised_augmented_run_is_extractable(memorised):
    """Part 3.1: knowledge trained on augmented biographies is extractable. Threshold 0.45
    overall and 4x chance (0.08): measured 0.84 when written, 0.60 after later trainer changes,
    and 0.55 with the fused loss (`kcap.models.loss`), whose float rounding differs from torch's
    and, over the run's steps, moves which of the 120 held-out answers come out (six of them
    here); an unaugmented or unlearnt model stays near chance (the test above)."""
    dataset, model, measured = memorised
    assert measured.recall_accuracy >= 0.8  # the run did memorise
    r = extract(model, dataset, QUICK, memorisable=measured)
    assert r.memorisable["overall"] == measured.recall_accuracy
    assert r.extractable["overall"] >= 0.45, r.extractable
    assert r.extractable["overall"] >= 4 * r.chance["overall"]
    assert r.finetune_accuracy["overall"] >= r.extractable["overall"] - 0.1


def test_biod_is_probed_with_its_own_questions(biod_ds):
    r = extract(_random_model(biod_ds), biod_ds, ExtractSettings(qv_rank=4, steps=3, batch_size=8))
    assert r.attributes == r.overall_attributes == ["ID 1", "ID 2", "ID 3"]
    p = biod_ds.manifest["params"]
    assert r.chance["uniform"]["ID 1"] == pytest.approx(p["d"] ** -p["c"])
    assert set(r.memorisable["per_attribute"]) == {"ID 1", "ID 2", "ID 3"}


def test_settings_are_checked_and_hashed():
    with pytest.raises(KcapError, match="--lr"):
        ExtractSettings(lr=0).check()
    with pytest.raises(KcapError, match="--method"):
        ExtractSettings(method="prefix").check()  # type: ignore[arg-type]
    with pytest.raises(KcapError, match="--rank"):
        ExtractSettings(qv_rank=0, embedding_rank=0).check()
    ExtractSettings(method="full", qv_rank=0, embedding_rank=0).check()  # ranks unused
    assert ExtractSettings().hash() == ExtractSettings().hash() != ExtractSettings(seed=1).hash()
    assert ExtractSettings(epochs=24, batch_size=96, min_steps=0).total_steps(3000) == 750
    assert ExtractSettings().total_steps(120) == ExtractSettings().min_steps


# ------------------------------------------------------------------------------ the store


def test_a_v2_store_gains_the_extractions_table(tmp_path: Path):
    db = tmp_path / "v2.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, name TEXT, config_hash TEXT, "
        "config_json TEXT, manifest_json TEXT, status TEXT NOT NULL, params_json TEXT, "
        "metrics_json TEXT, timings_json TEXT, host TEXT, run_dir TEXT, error TEXT, "
        "created_at REAL, updated_at REAL, claim_token TEXT)"
    )
    con.execute(
        "INSERT INTO runs (run_id, status, config_json, metrics_json, created_at, updated_at) "
        "VALUES ('old', 'finished', '{}', '{\"R\": 1.5}', 1, 1)"
    )
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    with ResultsStore(db) as store:
        assert store.get("old").metrics == {"R": 1.5}
        assert store.list_extractions() == []
        store.record_extraction("old", "h1", settings={"lr": 1}, result={"x": 1})
        store.record_extraction("old", "h1", settings={"lr": 1}, result={"x": 2})
        store.record_extraction("old", "h2", settings={"lr": 2}, result={"x": 3})
        assert store.get_extraction("old", "h1").result == {"x": 2}
        assert len(store.list_extractions("old")) == 2
        assert store.latest_extractions()["old"].result == {"x": 3}
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    con.close()


# ------------------------------------------------------------------------------ the command


def test_cli_end_to_end(runs, tmp_path):
    run, db = runs["bios"][0], runs["db"]
    checkpoint = (run / "checkpoint.pt").read_bytes()
    r = _cli("extract", run, "--steps", 4, "--batch-size", 8, "--db", db, "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert json.loads((run / "extract.json").read_text()) == result
    assert (run / "checkpoint.pt").read_bytes() == checkpoint  # the run is only read
    measured = json.loads((run / "measure.json").read_text())
    assert result["memorisable"]["overall"] == measured["recall_accuracy"]
    assert result["memorisable"]["source"] == "measure.json"
    with ResultsStore(db) as store:
        rec = store.get_extraction(result["run_id"], result["settings_hash"])
        assert rec is not None and rec.result == result
        assert store.get(result["run_id"]).name == "tiny"  # linked to the run's row
    table = _cli("extract", run, "--steps", 4, "--batch-size", 8, "--db", db)
    assert table.exit_code == 0 and "extractable" in table.output and "overall" in table.output

    out = tmp_path / "report"
    rep = _cli("report", db, "--out", out)
    assert rep.exit_code == 0, rep.output
    md = (out / "report.md").read_text()
    assert "## Knowledge extraction" in md
    ext = f"{result['extractable']['overall']:.1%}"
    assert ext in md.split("## Knowledge extraction")[1]
    html = (out / "index.html").read_text()
    assert "<th>extractable (chance)</th>" in html and 'id="extraction-table"' in html
    assert html.count('<td class="num">—</td><td class="num">—</td></tr>') == 1  # run 1

    from kcap.experiments.run_report import write_run_report

    page = write_run_report(run, tmp_path / "run-report").read_text()
    assert "## Knowledge extraction" in page and "| **overall** |" in page
    assert f"| extractable accuracy (chance) | {ext} (" in page
    assert "work_city (not in overall)" in page
    other = write_run_report(runs["bios"][1], tmp_path / "other-report").read_text()
    assert "extract" not in other.lower()  # a run never probed: nothing new
    assert "--embedding-rank" in _cli("extract", "--help").output


def test_cli_measures_recall_when_the_run_has_no_measurement(runs, tmp_path):
    from kcap.measure import measure
    from kcap.training.trainer import load_run

    run = runs["unmeasured"]
    r = _cli("extract", run, "--steps", 2, "--batch-size", 8, "--db", tmp_path / "k.db", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["memorisable"]["source"] == "measured now"
    cfg, dataset, model, params = load_run(run)
    m = measure(model, dataset, P_count=params["P"], eval_seed=cfg.measurement.eval_seed)
    assert result["memorisable"]["overall"] == m.recall_accuracy
    assert not (run / "measure.json").exists()  # the run itself is left as it was


def _one_line_error(r, pattern: str) -> None:
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert pattern in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--lr", "-1"], "Error: --lr: must be > 0"),
        (["--method", "prefix"], "Error: --method: must be one of lora, full"),
        (["--rank", "0", "--embedding-rank", "0"], "Error: --rank:"),
        (["--batch-size", "0"], "Error: --batch-size:"),
        (["--steps", "0"], "Error: --steps:"),
        (["--epochs", "0"], "Error: --epochs:"),
        (["--device", "tpu"], "Error: --device:"),
    ],
)
def test_cli_refuses_bad_settings(runs, tmp_path, args, pattern):
    run = runs["bios"][1]
    r = _cli("extract", run, *args, "--db", tmp_path / "k.db")
    _one_line_error(r, pattern)
    assert not (run / "extract.json").exists() and not (tmp_path / "k.db").exists()


def test_cli_refuses_what_it_cannot_probe(runs, tmp_path, bios_dir):
    r = _cli("extract", bios_dir, "--db", tmp_path / "k.db")  # a dataset, not a run
    _one_line_error(r, "Error: RUN_DIR:")
    r = _cli("extract", runs["random"], "--db", tmp_path / "k.db")
    _one_line_error(r, "Error: RUN_DIR: extraction needs people with attributes")
    assert not (runs["random"] / "extract.json").exists()
    newer = tmp_path / "new.db"
    ResultsStore(newer).close()
    with sqlite3.connect(newer) as con:
        con.execute("PRAGMA user_version = 99")
    con.close()
    r = _cli("extract", runs["bios"][1], "--steps", 1, "--db", newer)
    _one_line_error(r, "Error: --db:")
    assert not (runs["bios"][1] / "extract.json").exists()
