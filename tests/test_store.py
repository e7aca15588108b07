"""The SQLite results store and the `kcap runs` command."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import sqlite3
import threading
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kcap.cli.runs import runs
from kcap.errors import KcapError
from kcap.experiments.archive import export_records, import_records, read_records
from kcap.experiments.store import SCHEMA_VERSION, LostClaim, ResultsStore, RunRecord
from kcap.training.config import config_hash

CONFIG = {"model": {"d_model": 64, "n_layer": 2}, "data": {"N": 1000, "seed": 0}, "lr": 1e-3}
MANIFEST = {"dataset": "bioS", "n_people": 1000, "files": {"train": "a.txt"}, "sha": "abc"}
METRICS = {"R": 12345.5, "R_max": 20000, "recall_accuracy": 0.875, "bits": {"total": 9876.0}}


@pytest.fixture
def store(tmp_path: Path):
    with ResultsStore(tmp_path / "nested" / "kcap.db") as s:
        yield s


def _start(store: ResultsStore, run_id: str, **kw) -> None:
    args = {"name": run_id, "config": CONFIG, "manifest": MANIFEST, "run_dir": f"runs/{run_id}"}
    store.start_run(run_id, **{**args, **kw})


# -- config_hash ------------------------------------------------------------------------------


def test_config_hash_is_order_independent_and_value_sensitive():
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}, "p": Path("/tmp/q")}
    b = {"p": Path("/tmp/q"), "y": {"a": [1, 2], "b": 2}, "x": 1}
    h = config_hash(a)
    assert h == config_hash(b)
    assert len(h) == 16 and all(c in "0123456789abcdef" for c in h)
    assert config_hash({**a, "x": 2}) != h
    assert config_hash({**a, "y": {"b": 3, "a": [1, 2]}}) != h
    assert config_hash({**a, "y": {"b": 2, "a": [2, 1]}}) != h  # list order matters


# -- schema, round trip, transitions ------------------------------------------------------


def test_schema_and_pragmas(store: ResultsStore):
    assert store.path.parent.is_dir()
    con = sqlite3.connect(store.path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [r[1] for r in con.execute("PRAGMA table_info(runs)")]
        assert cols == [
            "run_id",
            "name",
            "config_hash",
            "config_json",
            "manifest_json",
            "status",
            "params_json",
            "metrics_json",
            "timings_json",
            "host",
            "run_dir",
            "error",
            "created_at",
            "updated_at",
            "claim_token",
        ]
        index_names = [r[1] for r in con.execute("PRAGMA index_list(runs)")]
        indexed = {
            col[2] for name in index_names for col in con.execute(f"PRAGMA index_info({name})")
        }
        assert {"config_hash", "status"} <= indexed
        with pytest.raises(sqlite3.IntegrityError):
            con.execute("INSERT INTO runs (run_id, status) VALUES ('x', 'bogus')")
    finally:
        con.close()
    # Re-opening an existing store keeps its rows.
    _start(store, "r0")
    with ResultsStore(store.path) as again:
        assert again.get("r0") is not None


def test_round_trip(store: ResultsStore):
    params = {"P": 1_234_567, "n_layer": 2}
    _start(store, "r1", params=params)
    rec = store.get("r1")
    assert isinstance(rec, RunRecord)
    assert rec.status == "running"
    assert rec.config == CONFIG and rec.manifest == MANIFEST and rec.params == params
    assert rec.config_hash == config_hash(CONFIG)
    assert rec.metrics == {} and rec.timings == {} and rec.error is None
    assert rec.run_dir == "runs/r1" and rec.host
    store.update_run("r1", timings={"step_s": 0.1}, metrics={"loss": 2.5})
    store.finish_run("r1", METRICS, timings={"wall_s": 42.0})
    rec = store.get("r1")
    assert rec.status == "finished"
    assert rec.metrics == METRICS and rec.timings == {"wall_s": 42.0}
    assert rec.updated_at >= rec.created_at
    d = rec.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["metrics"]["bits"]["total"] == 9876.0
    assert store.get("nope") is None


def test_status_transitions(store: ResultsStore):
    _start(store, "a")
    created = store.get("a").created_at
    assert not store.is_finished("a")
    store.fail_run("a", "CUDA out of memory")
    rec = store.get("a")
    assert rec.status == "failed" and rec.error == "CUDA out of memory"
    assert not store.is_finished("a")
    # Restarting resets to running, clears the error and keeps created_at.
    _start(store, "a", name="a-retry")
    rec = store.get("a")
    assert (rec.status, rec.error, rec.name, rec.created_at) == (
        "running",
        None,
        "a-retry",
        created,
    )
    store.finish_run("a", {"R": 1.0})
    assert store.is_finished("a") and not store.is_finished("missing")
    _start(store, "b")
    _start(store, "c")
    store.fail_run("c", "boom")
    assert [r.run_id for r in store.list_runs()] == ["a", "b", "c"]
    assert [r.run_id for r in store.list_runs("finished")] == ["a"]
    assert [r.run_id for r in store.list_runs("running")] == ["b"]
    assert [r.run_id for r in store.list_runs("failed")] == ["c"]
    with pytest.raises(ValueError):
        store.list_runs("done")
    with pytest.raises(ValueError):
        store.update_run("a", status="failed")
    with pytest.raises(KeyError):
        store.finish_run("missing", {})


def test_claim_semantics(store: ResultsStore):
    kw = {"name": "p", "config": CONFIG, "manifest": None, "run_dir": None}
    assert store.claim("p", **kw)
    assert store.claim("p", **kw) is None  # running
    assert store.claim("p", allow_finished=True, **kw) is None  # running, even for a re-run
    store.finish_run("p", {"R": 1.0})
    assert store.claim("p", **kw) is None  # finished
    assert store.get("p").status == "finished"
    assert store.claim("p", allow_finished=True, **kw)  # a deliberate re-run
    assert store.claim("q", **kw)
    store.fail_run("q", "boom")
    assert store.claim("q", **kw)  # a failed run may be re-claimed
    assert store.get("q").status == "running" and store.get("q").error is None
    assert store.claim("q", **kw) is None


def test_only_the_claim_holder_writes(store: ResultsStore):
    kw = {"name": "p", "config": CONFIG, "manifest": None, "run_dir": None}
    old = store.claim("p", **kw)
    assert store.get("p").claim_token == old
    store.update_run("p", token=old, timings={"heartbeat": 1.0})
    # the run goes stale and another process reclaims it: the first holder may write no more
    assert store.fail_if_unchanged("p", store.get("p").updated_at, "interrupted (stale)")
    new = store.claim("p", **kw)
    assert new and new != old
    for write in (
        lambda: store.finish_run("p", {"R": 1.0}, token=old),
        lambda: store.fail_run("p", "late", token=old),
        lambda: store.update_run("p", token=old, timings={"heartbeat": 2.0}),
    ):
        with pytest.raises(LostClaim):
            write()
    rec = store.get("p")
    assert rec.status == "running" and rec.claim_token == new and rec.timings == {}
    store.finish_run("p", {"R": 2.0}, token=new)
    assert store.get("p").metrics == {"R": 2.0}
    with pytest.raises(KeyError):
        store.finish_run("nobody", {}, token=new)


def test_a_v1_store_is_migrated_and_a_newer_one_refused(tmp_path: Path):
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, name TEXT, config_hash TEXT, "
        "config_json TEXT, manifest_json TEXT, status TEXT NOT NULL, params_json TEXT, "
        "metrics_json TEXT, timings_json TEXT, host TEXT, run_dir TEXT, error TEXT, "
        "created_at REAL, updated_at REAL)"
    )
    con.execute(
        "INSERT INTO runs (run_id, status, config_json, created_at, updated_at) "
        "VALUES ('old', 'finished', '{}', 1, 1)"
    )
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    with ResultsStore(db) as store:
        rec = store.get("old")
        assert rec.status == "finished" and rec.claim_token is None
        assert store.claim("new", config={})
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(KcapError, match=f"schema v{SCHEMA_VERSION + 1}, newer"):
        ResultsStore(db)


def test_threads_share_one_store(store: ResultsStore):
    def work(k: int) -> None:
        for i in range(10):
            _start(store, f"t{k}-{i}")
            store.finish_run(f"t{k}-{i}", {"R": float(i)})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list_runs("finished")) == 40


# -- two writer processes ----------------------------------------------------------------


def _writer(db: str, worker: int, barrier, results) -> None:
    with ResultsStore(db) as store:
        barrier.wait(timeout=30)
        for i in range(40):
            run_id = f"w{worker}-{i:02d}"
            store.start_run(run_id, name=run_id, config={"i": i}, manifest=None, run_dir=None)
            store.finish_run(run_id, {"R": float(i)}, timings={"wall_s": 0.01})
            if i == 20:
                won = store.claim("contested", name=f"w{worker}", config={"c": 1})
                results.put((worker, won))


def test_two_writer_processes(tmp_path: Path):
    db = str(tmp_path / "kcap.db")
    ResultsStore(db).close()  # create the schema up front, as a sweep driver would
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(db, w, barrier, results)) for w in (0, 1)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    with ResultsStore(db) as store:
        records = store.list_runs()
        assert len(records) == 81
        assert len({r.run_id for r in records}) == 81
        assert sum(bool(won) for won in outcomes.values()) == 1
        winner = next(w for w, won in outcomes.items() if won)
        contested = store.get("contested")
        assert contested.status == "running" and contested.name == f"w{winner}"
        assert len(store.list_runs("finished")) == 80


def _claimer(db: str, worker: int, ids: list[str], barrier, results) -> None:
    with ResultsStore(db) as store:
        for run_id in ids:
            barrier.wait(timeout=30)  # every process claims the same id at the same moment
            token = store.claim(run_id, name=f"w{worker}", config={"id": run_id})
            results.put((run_id, worker, token))


def test_claims_contended_at_the_same_moment(tmp_path: Path):
    """Four processes claim each of 30 ids at once: every id has exactly one winner, and the
    row holds the winner's token."""
    db = str(tmp_path / "kcap.db")
    ResultsStore(db).close()
    ids = [f"c{i:02d}" for i in range(30)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(db, w, ids, barrier, results)) for w in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in range(4 * len(ids))]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    with ResultsStore(db) as store:
        for run_id in ids:
            winners = [(w, tok) for rid, w, tok in outcomes if rid == run_id and tok]
            assert len(winners) == 1, (run_id, winners)
            rec = store.get(run_id)
            assert rec.name == f"w{winners[0][0]}" and rec.claim_token == winners[0][1]


# -- the `runs` command ------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("runs")(runs)

    @app.command("noop")  # a second command keeps `runs` a named subcommand
    def _noop() -> None:
        pass

    return app


@pytest.fixture
def populated_db(tmp_path: Path) -> Path:
    db = tmp_path / "kcap.db"
    with ResultsStore(db) as store:
        _start(store, "run-ok", params={"P": 1_234_567})
        store.finish_run("run-ok", METRICS, timings={"wall_s": 125.0})
        _start(store, "run-bad")
        store.fail_run("run-bad", "boom")
        _start(store, "run-cut")
        store.fail_run("run-cut", "interrupted: SIGTERM at step 1,200")
    return db


def test_runs_command_table(populated_db: Path):
    runner = CliRunner()
    # Captured (non-terminal) output is printed at full width, whatever COLUMNS says.
    res = runner.invoke(_cli(), ["runs", "--db", str(populated_db)], env={"COLUMNS": "60"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    header = next(line for line in lines if "run_id" in line)
    for col in ("name", "status", "P", "R_max", "bits total", "recall accuracy", "wall time"):
        assert col in header
    ok = next(line for line in lines if "run-ok" in line).split()
    assert ok[2:9] == ["finished", "1.23M", "12.3k", "20k", "9.88k", "0.875", "2m05s"]
    bad = next(line for line in lines if "run-bad" in line).split()
    assert bad[2:9] == ["failed"] + ["-"] * 6  # no params, metrics or timings
    cut = next(line for line in lines if "run-cut" in line).split()
    assert cut[2] == "interrupted"
    # below the table, why each run that did not finish stopped
    assert "run-bad failed: boom" in lines
    assert "run-cut interrupted: interrupted: SIGTERM at step 1,200" in lines
    res = runner.invoke(_cli(), ["runs", "--db", str(populated_db), "--status", "failed"])
    assert res.exit_code == 0 and "run-bad" in res.stdout and "run-ok" not in res.stdout


def test_runs_command_json(populated_db: Path):
    runner = CliRunner()
    res = runner.invoke(_cli(), ["runs", "--db", str(populated_db), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [d["run_id"] for d in data] == ["run-ok", "run-bad", "run-cut"]
    assert data[0]["metrics"] == METRICS and data[0]["config"] == CONFIG
    assert data[1]["status"] == "failed" and data[1]["error"] == "boom"
    res = runner.invoke(
        _cli(), ["runs", "--db", str(populated_db), "--json", "--status", "running"]
    )
    assert res.exit_code == 0 and json.loads(res.stdout) == []


def test_runs_command_errors(tmp_path: Path, populated_db: Path):
    runner = CliRunner()
    missing = tmp_path / "nope" / "kcap.db"
    res = runner.invoke(_cli(), ["runs", "--db", str(missing)])
    assert res.exit_code == 2
    assert res.stderr.strip() == f"Error: --db: no results store at {missing}"
    assert not missing.exists() and not missing.parent.exists()
    res = runner.invoke(_cli(), ["runs", "--db", str(populated_db), "--status", "done"])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert "\n" not in err and all(s in err for s in ("running", "finished", "failed"))


def test_runs_command_csv(tmp_path: Path):
    """--csv writes one flat row per finished run, with the numbers the store holds."""
    import csv

    import synthetic_runs as syn

    db = tmp_path / "kcap.db"
    with ResultsStore(db) as store:
        ids = [
            syn.record(store, n=n, P=40_000, R=1.0, biod=(8, 1, 128, 1, 128)) for n in (800, 200)
        ]
        floor = {"d_model": 24, "rotary_min_dims": 16}  # the lab's v3 GPT2: a 12-dim head
        ids.append(syn.record(store, n=400, P=30_000, R=1.0, overrides=floor, preset="gpt2-2-2"))
        _start(store, "run-bad")
        store.fail_run("run-bad", "boom")
        store.update_run(ids[0], params={"P": 40_000, "non_embedding": 16_000})
        finished = {r.run_id: r for r in store.list_runs("finished")}
    out = tmp_path / "runs.csv"
    res = CliRunner().invoke(_cli(), ["runs", "--db", str(db), "--csv", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    rotated = {r["run_id"]: r["rotary_dims"] for r in rows}
    assert [rotated[i] for i in ids] == ["10", "10", "12"]  # a quarter of 40 dims; all of 12
    assert {r["run_id"]: r["arch"] for r in rows}[ids.pop()] == "gpt2"
    rows = [r for r in rows if r["run_id"] in ids]
    assert [r["run_id"] for r in rows] == ids[::-1]  # sorted by N; the failed run left out
    for row in rows:
        m = finished[row["run_id"]].metrics
        assert row["family"] == "bioD" and row["arch"] == "gpt2" and row["exposures"] == "1000"
        assert int(row["N"]) == m["n_people"] and int(row["P"]) == 40_000
        assert float(row["R"]) == pytest.approx(m["R"], abs=1e-4)
        assert int(row["bits_stored"]) == round(m["bits"]["total"])
    # N = 200 fits in 40k parameters at 1 bit each (97% stored), N = 800 does not
    assert float(rows[1]["fraction_stored"]) < 0.9 < float(rows[0]["fraction_stored"])
    assert not list(tmp_path.glob("*.tmp"))
    assert {r["quantize"] for r in rows} == {""}  # kcap quantize rows say int4-gptq(-g128)
    by_id = {r["run_id"]: r for r in rows}
    bits = finished[ids[0]].metrics["bits"]["total"]
    assert float(by_id[ids[0]]["R_non_embedding"]) == pytest.approx(bits / 16_000, abs=1e-4)
    assert by_id[ids[1]]["R_non_embedding"] == ""  # no parameter counts recorded
    assert by_id[ids[0]]["seed"] == "0" and by_id[ids[0]]["packed_with"] == "0"
    # the schedule's floor is the default a config leaves out; only wsd has a decay phase
    assert by_id[ids[0]]["min_lr_ratio"] == "0.1" and by_id[ids[0]]["decay_fraction"] == ""
    # the setting is the analysis's label of the dataset without its N: one for both N here
    assert {r["setting"] for r in rows} == {"bioD k=8 c=1 d=128 l=1 t=128"}


def test_csv_names_quantized_measurements():
    from kcap.cli.runs import _quant_label

    assert _quant_label(None) == ""
    paper = {"bits": 4, "method": "gptq", "group_size": None, "sym": True, "act_order": True}
    assert _quant_label(paper) == "int4-gptq"
    asym = {"bits": 8, "method": "rtn", "group_size": 128, "sym": False, "act_order": False}
    assert _quant_label(asym) == "int8-rtn-g128-asym"
    # rows recorded before the grid was a choice were asymmetric, without act-order
    assert _quant_label({"bits": 4, "method": "gptq", "group_size": None}) == "int4-gptq-asym-noact"


# -- portable exports (`kcap runs --export` / `--import`) --------------------------------------


def _study(db: Path) -> list[str]:
    """Three finished synthetic runs (one with its history only in its run directory), one
    failed and one still running."""
    import synthetic_runs as syn

    with ResultsStore(db) as store:
        ids = [
            syn.record(store, n=n, P=40_000, R=1.0, biod=(8, 1, 128, 1, 128)) for n in (200, 800)
        ]
        ids.append(syn.record(store, n=400, P=20_000, R=1.0, history=False))
        run_dir = db.parent / "runs" / ids[2]  # as `kcap train` leaves it: metrics.jsonl
        run_dir.mkdir(parents=True)
        lines = [{"step": s, "measure": {"bits": 10.0 * s}} for s in (100, 200)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE runs SET run_dir = ? WHERE run_id = ?", (str(run_dir), ids[2]))
        _start(store, "run-bad")
        store.fail_run("run-bad", "boom")
        _start(store, "run-live")
    return ids


def test_export_import_round_trip_is_loss_free(tmp_path: Path):
    """An export holds every finished run and no machine path; a store rebuilt from it gives
    the same records (history inlined) and the same analysis points."""
    from kcap.experiments.analysis import load_points

    db, out, rebuilt = tmp_path / "a" / "kcap.db", tmp_path / "runs.jsonl", tmp_path / "b.db"
    ids = _study(db)
    runner = CliRunner()
    res = runner.invoke(_cli(), ["runs", "--db", str(db), "--export", str(out)])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"3 finished runs -> {out}"
    text = out.read_text()
    assert len(text.splitlines()) == 3 and str(tmp_path) not in text
    res = runner.invoke(_cli(), ["runs", "--db", str(rebuilt), "--import", str(out)])
    assert res.exit_code == 0, res.output
    assert "3 added, 0 replaced, 0 kept" in res.stdout
    with ResultsStore(db) as a, ResultsStore(rebuilt) as b:
        before, after = a.list_runs("finished"), b.list_runs()
    assert [r.run_id for r in after] == [r.run_id for r in before] == ids
    for x, y in zip(before, after, strict=True):
        assert (y.status, y.run_dir, y.claim_token) == ("finished", None, None)
        assert y.config_hash == x.config_hash == config_hash(x.config)
        for field in ("name", "config", "manifest", "params", "timings", "host", "created_at"):
            assert getattr(y, field) == getattr(x, field), field
        history = x.metrics.get("history") or [
            {"step": 100, "bits": 1e3},
            {"step": 200, "bits": 2e3},
        ]
        assert y.metrics == {**x.metrics, "history": history}
    strip = lambda p: dataclasses.replace(p, run_dir=None)  # noqa: E731
    assert [strip(p) for p in load_points(rebuilt)] == [strip(p) for p in load_points(db)]
    assert [p.history for p in load_points(rebuilt)] == [p.history for p in load_points(db)]


def test_export_keeps_the_config_as_run_and_drops_machine_paths_elsewhere():
    """A config's own path (a dataset given by path) is the run's identity and stays; run
    directories and quantize's source directory go."""
    from kcap.experiments.archive import portable

    config = {"dataset": {"path": "/data/bios"}, "training": {"seed": 0}}
    metrics = {"bits": {"total": 1.0}, "quantize": {"bits": 8, "source_run_dir": "/x/runs/a"}}
    rec = RunRecord("r", "r", None, config, {"kind": "bios"}, "finished", {}, metrics,
                    {"host": "h"}, "h", "/x/runs/r", None, 0.0, 0.0)  # fmt: skip
    out = portable(rec)
    assert out["config"] == config and "run_dir" not in out
    assert out["metrics"]["quantize"] == {"bits": 8}


def test_import_keeps_finished_and_running_rows_and_replaces_failed_ones(tmp_path: Path):
    db, out = tmp_path / "kcap.db", tmp_path / "runs.jsonl"
    ids = _study(db)
    with ResultsStore(db) as store:
        export_records(store.list_runs(), out)
        donor = read_records(out)
        mine = store.get(ids[0])
        # the exported runs, renamed: one the store failed, one it is running, one it lacks
        failed, live, fresh = (
            dataclasses.replace(donor[i], run_id=r)
            for i, r in ((1, "run-bad"), (2, "run-live"), (0, "run-new"))
        )
        counts = import_records(store, [*donor, failed, live, fresh])
        assert counts == {"kept": 4, "replaced": 1, "added": 1}
        assert store.get(ids[0]).metrics == mine.metrics  # a finished row is never overwritten
        assert store.get("run-bad").state == "finished" and store.get("run-bad").error is None
        assert store.get("run-live").status == "running"  # a live worker holds it
        assert store.get("run-new").metrics == donor[0].metrics


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "is not JSON"),
        (
            '{"format": "kcap-runs/9", "run_id": "x"}',
            "format must be 'kcap-runs/1'; got 'kcap-runs/9'",
        ),
        ('{"format": "kcap-runs/1", "run_id": "x", "config": {"a": 1}}', "lacks metrics"),
        (  # a record whose id was edited: a sweep would skip a config it never ran
            '{"format": "kcap-runs/1", "run_id": "0123456789abcdef", "config": {"a": 2},'
            ' "metrics": {"bits": {"total": 1.0}}}',
            f"run_id 0123456789abcdef is not the hash of its config ({config_hash({'a': 2})})",
        ),
    ],
)
def test_import_refuses_bad_lines_and_writes_nothing(tmp_path: Path, line: str, message: str):
    db, bad = tmp_path / "new.db", tmp_path / "runs.jsonl"
    good = json.dumps(
        {
            "format": "kcap-runs/1",
            "run_id": config_hash({"a": 1}),
            "config": {"a": 1},
            "metrics": {"bits": {"total": 1.0}},
        }
    )
    bad.write_text(f"{good}\n{line}\n")
    res = CliRunner().invoke(_cli(), ["runs", "--db", str(db), "--import", str(bad)])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert "\n" not in err and err.startswith(f"Error: --import: {bad}:2") and message in err
    assert not db.exists()  # the good first line was not imported either
