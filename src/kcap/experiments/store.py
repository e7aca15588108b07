"""The embedded SQLite results store: one row per training run, safe for concurrent writers.

Every training run (and every sweep point) is recorded here: its config (and a stable hash of
it), the data manifest, parameters, metrics, timings, status and where its files live.  Several
processes may write to the same database at once (sweep workers); WAL mode, a busy timeout,
``BEGIN IMMEDIATE`` transactions and a retry loop on "database is locked" make that safe, and
:meth:`ResultsStore.claim` lets workers share a sweep without ever running one config twice.

Each claim gets a fresh token. Whoever holds a run passes its token to `update_run`,
`finish_run` and `fail_run`; a write with a token that is no longer the row's (the run was
reclaimed as stale and someone else holds it now) changes nothing and raises `LostClaim`, so a
run has one writer in the store however its processes die.

Extraction probes (`kcap extract`, `kcap.measure.extract`) are recorded beside the runs, in
the ``extractions`` table: one row per (run_id, settings hash), the probe's JSON result, linked
to a run by its ``run_id`` (the run need not be in this store). Schema v3 added that table; a
v1 or v2 store gains it (empty) when opened, its runs untouched.

Only the standard library's :mod:`sqlite3` is used.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kcap.errors import KcapError
from kcap.training.config import config_hash

__all__ = [
    "DEFAULT_DB",
    "SCHEMA_VERSION",
    "STATUSES",
    "ExtractionRecord",
    "LostClaim",
    "ResultsStore",
    "RunRecord",
    "config_hash",
]

DEFAULT_DB = "kcap.db"
SCHEMA_VERSION = 3  # v2: claim_token; v3: the extractions table
STATUSES = ("running", "finished", "failed")

_BUSY_TIMEOUT_MS = 30_000
_LOCK_RETRIES = 5
_LOCK_BACKOFF_S = 0.05

# Fields that update_run() accepts; each is a dict stored as JSON in the "<name>_json" column.
_UPDATABLE = ("params", "metrics", "timings", "manifest")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id        TEXT PRIMARY KEY,
    name          TEXT,
    config_hash   TEXT,
    config_json   TEXT,
    manifest_json TEXT,
    status        TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
    params_json   TEXT,
    metrics_json  TEXT,
    timings_json  TEXT,
    host          TEXT,
    run_dir       TEXT,
    error         TEXT,
    created_at    REAL,
    updated_at    REAL,
    claim_token   TEXT
);
CREATE INDEX IF NOT EXISTS idx_runs_config_hash ON runs (config_hash);
CREATE INDEX IF NOT EXISTS idx_runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS extractions (
    run_id        TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    settings_json TEXT,
    result_json   TEXT,
    run_dir       TEXT,
    created_at    REAL,
    updated_at    REAL,
    PRIMARY KEY (run_id, settings_hash)
);
"""

_COLUMNS = (
    "run_id, name, config_hash, config_json, manifest_json, status, params_json, metrics_json, "
    "timings_json, host, run_dir, error, created_at, updated_at, claim_token"
)

T = TypeVar("T")


def _dumps(value: dict | None) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, default=str)


def _loads(text: str | None) -> dict | None:
    if text is None:
        return None
    return json.loads(text)


#: The error prefix of a run stopped by a signal or a lost worker: it resumes from its checkpoint.
INTERRUPTED = "interrupted"


@dataclass
class RunRecord:
    """One row of the ``runs`` table with its JSON columns decoded.

    ``config`` is always a dict; ``manifest`` is ``None`` when none was recorded; ``params``,
    ``metrics`` and ``timings`` are empty dicts until something is written to them.
    """

    run_id: str
    name: str | None
    config_hash: str | None
    config: dict
    manifest: dict | None
    status: str
    params: dict
    metrics: dict
    timings: dict
    host: str | None
    run_dir: str | None
    error: str | None
    created_at: float
    updated_at: float
    claim_token: str | None = None

    @property
    def state(self) -> str:
        """The status, with a run stopped by a signal or a lost worker (``failed`` with an
        ``interrupted`` error: it resumes from its checkpoint) told apart as ``interrupted``."""
        if self.status == "failed" and (self.error or "").startswith(INTERRUPTED):
            return INTERRUPTED
        return self.status

    @classmethod
    def from_row(cls, row: sqlite3.Row | tuple) -> RunRecord:
        (
            run_id,
            name,
            chash,
            config_json,
            manifest_json,
            status,
            params_json,
            metrics_json,
            timings_json,
            host,
            run_dir,
            error,
            created_at,
            updated_at,
            claim_token,
        ) = tuple(row)
        return cls(
            run_id=run_id,
            name=name,
            config_hash=chash,
            config=_loads(config_json) or {},
            manifest=_loads(manifest_json),
            status=status,
            params=_loads(params_json) or {},
            metrics=_loads(metrics_json) or {},
            timings=_loads(timings_json) or {},
            host=host,
            run_dir=run_dir,
            error=error,
            created_at=created_at,
            updated_at=updated_at,
            claim_token=claim_token,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)


@dataclass
class ExtractionRecord:
    """One row of the ``extractions`` table: the probe's result for one run and settings."""

    run_id: str
    settings_hash: str
    settings: dict
    result: dict
    run_dir: str | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: tuple) -> ExtractionRecord:
        run_id, settings_hash, settings, result, run_dir, created_at, updated_at = tuple(row)
        return cls(
            run_id=run_id,
            settings_hash=settings_hash,
            settings=_loads(settings) or {},
            result=_loads(result) or {},
            run_dir=run_dir,
            created_at=created_at,
            updated_at=updated_at,
        )


_EXTRACTION_COLUMNS = (
    "run_id, settings_hash, settings_json, result_json, run_dir, created_at, updated_at"
)


class LostClaim(RuntimeError):
    """A write by a process whose claim on the run was taken over (it must stop writing)."""


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class ResultsStore:
    """A results database at ``path``; one connection per instance, shareable across threads.

    Use as a context manager (``with ResultsStore(p) as store: ...``) or call :meth:`close`.
    """

    def __init__(self, path: str | Path = DEFAULT_DB) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: no implicit transactions; every write opens its own explicitly.
        self._conn = sqlite3.connect(
            str(self.path),
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        self._retrying(lambda: self._conn.execute("PRAGMA journal_mode = WAL").fetchone())
        self._conn.execute("PRAGMA synchronous = NORMAL")
        try:
            self._write(self._init_schema)
        except BaseException:  # e.g. a store from a newer kcap: leave no connection behind
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------

    def _retrying(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` retrying on "database is locked" with exponential backoff."""
        delay = _LOCK_BACKOFF_S
        for attempt in range(_LOCK_RETRIES + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or attempt == _LOCK_RETRIES:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body(conn)`` inside one ``BEGIN IMMEDIATE`` transaction, retried when locked."""

        def attempt() -> T:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        with self._lock:
            if self._conn is None:
                raise sqlite3.ProgrammingError("ResultsStore is closed")
            return self._retrying(attempt)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            if self._conn is None:
                raise sqlite3.ProgrammingError("ResultsStore is closed")
            return self._retrying(lambda: self._conn.execute(sql, args).fetchall())

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise KcapError(
                "--db",
                f"{self.path} has results-store schema v{version}, newer than this kcap's "
                f"v{SCHEMA_VERSION}; upgrade kcap to read it",
            )
        # executescript() would COMMIT our transaction; run the statements one by one instead.
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        if "claim_token" not in columns:  # a v1 store
            conn.execute("ALTER TABLE runs ADD COLUMN claim_token TEXT")
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    def _upsert_running(
        conn: sqlite3.Connection,
        run_id: str,
        *,
        name: str | None,
        config: dict,
        manifest: dict | None,
        run_dir: str | None,
        params: dict | None,
    ) -> str:
        now = time.time()
        token = secrets.token_hex(8)
        conn.execute(
            """
            INSERT INTO runs (run_id, name, config_hash, config_json, manifest_json, status,
                              params_json, metrics_json, timings_json, host, run_dir, error,
                              created_at, updated_at, claim_token)
            VALUES (?, ?, ?, ?, ?, 'running', ?, NULL, NULL, ?, ?, NULL, ?, ?, ?)
            ON CONFLICT (run_id) DO UPDATE SET
                name = excluded.name,
                config_hash = excluded.config_hash,
                config_json = excluded.config_json,
                manifest_json = excluded.manifest_json,
                status = 'running',
                params_json = excluded.params_json,
                metrics_json = NULL,
                timings_json = NULL,
                host = excluded.host,
                run_dir = excluded.run_dir,
                error = NULL,
                updated_at = excluded.updated_at,
                claim_token = excluded.claim_token
            """,
            (
                run_id,
                name,
                config_hash(config),
                _dumps(config),
                _dumps(manifest),
                _dumps(params),
                socket.gethostname(),
                None if run_dir is None else str(run_dir),
                now,
                now,
                token,
            ),
        )
        return token

    @staticmethod
    def _update(
        conn: sqlite3.Connection, run_id: str, sets: dict[str, Any], token: str | None = None
    ) -> None:
        """Update a row; with ``token``, only while that claim still holds the run."""
        sets = {**sets, "updated_at": time.time()}
        assignments = ", ".join(f"{col} = ?" for col in sets)
        where, args = "run_id = ?", (run_id,)
        if token is not None:
            where, args = "run_id = ? AND claim_token = ?", (run_id, token)
        cur = conn.execute(f"UPDATE runs SET {assignments} WHERE {where}", (*sets.values(), *args))
        if cur.rowcount == 0:
            exists = conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if exists is None:
                raise KeyError(f"no run {run_id!r} in the results store")
            raise LostClaim(f"run {run_id} was claimed by another process; this one stops")

    # -- writes -----------------------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        *,
        name: str | None,
        config: dict,
        manifest: dict | None,
        run_dir: str | None,
        params: dict | None = None,
    ) -> str:
        """Record ``run_id`` as running; an existing row is reset (its ``created_at`` kept).
        Returns the new claim token."""
        return self._write(
            lambda conn: self._upsert_running(
                conn,
                run_id,
                name=name,
                config=config,
                manifest=manifest,
                run_dir=run_dir,
                params=params,
            )
        )

    def claim(
        self, run_id: str, *, allow_finished: bool = False, **start_kwargs: Any
    ) -> str | None:
        """Atomically start ``run_id`` unless it is already running (or finished, unless
        ``allow_finished``: a deliberate re-run).

        ``start_kwargs`` are those of :meth:`start_run`.  Returns the claim token when this
        caller got the run (a fresh id, or one whose previous attempt failed), None otherwise.
        """
        kwargs = {"name": None, "manifest": None, "run_dir": None, "params": None, **start_kwargs}
        if "config" not in kwargs:
            raise TypeError("claim() needs config=")

        taken = ("running",) if allow_finished else ("running", "finished")

        def body(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is not None and row[0] in taken:
                return None
            return self._upsert_running(conn, run_id, **kwargs)

        return self._write(body)

    def update_run(self, run_id: str, token: str | None = None, **fields: dict | None) -> None:
        """Replace any of ``params``, ``metrics``, ``timings``, ``manifest`` of ``run_id``
        (with ``token``: only while that claim holds the run, else `LostClaim`)."""
        unknown = set(fields) - set(_UPDATABLE)
        if unknown:
            raise ValueError(f"update_run: unknown fields {sorted(unknown)}; allowed {_UPDATABLE}")
        if not fields:
            return
        sets = {f"{key}_json": _dumps(value) for key, value in fields.items()}
        self._write(lambda conn: self._update(conn, run_id, sets, token))

    def finish_run(
        self, run_id: str, metrics: dict, timings: dict | None = None, token: str | None = None
    ) -> None:
        """Mark ``run_id`` finished with its final ``metrics`` (and ``timings``, if given);
        with ``token``, only while that claim holds the run (else `LostClaim`)."""
        sets: dict[str, Any] = {
            "status": "finished",
            "metrics_json": _dumps(metrics),
            "error": None,
        }
        if timings is not None:
            sets["timings_json"] = _dumps(timings)
        self._write(lambda conn: self._update(conn, run_id, sets, token))

    def fail_run(self, run_id: str, error: str, token: str | None = None) -> None:
        """Mark ``run_id`` failed with an error message (it may then be re-claimed); with
        ``token``, only while that claim holds the run (else `LostClaim`)."""
        sets = {"status": "failed", "error": error}
        self._write(lambda conn: self._update(conn, run_id, sets, token))

    def fail_if_unchanged(self, run_id: str, updated_at: float, error: str) -> bool:
        """Atomically mark a running row failed if nobody touched it since ``updated_at`` (a
        sweep reclaiming a run whose worker died); True when this call marked it."""

        def body(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE runs SET status = 'failed', error = ?, updated_at = ? "
                "WHERE run_id = ? AND status = 'running' AND updated_at = ?",
                (error, time.time(), run_id, updated_at),
            )
            return cur.rowcount == 1

        return self._write(body)

    def add_finished(self, rec: RunRecord) -> str:
        """Add a finished run recorded elsewhere (`kcap.experiments.archive`), as it was: its
        times, host and metrics, no run directory. A row this store has finished, or is
        running now (a live worker holds it), is kept; a failed or interrupted one is replaced.
        Returns "added", "replaced" or "kept"."""

        def body(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (rec.run_id,)).fetchone()
            if row is not None and row[0] in ("finished", "running"):
                return "kept"
            conn.execute("DELETE FROM runs WHERE run_id = ?", (rec.run_id,))
            conn.execute(
                f"INSERT INTO runs ({_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, 'finished', ?, ?, ?, ?, NULL, NULL, ?, ?, NULL)",
                (
                    rec.run_id,
                    rec.name,
                    config_hash(rec.config),
                    _dumps(rec.config),
                    _dumps(rec.manifest),
                    _dumps(rec.params),
                    _dumps(rec.metrics),
                    _dumps(rec.timings),
                    rec.host,
                    rec.created_at,
                    rec.updated_at,
                ),
            )
            return "added" if row is None else "replaced"

        return self._write(body)

    def record_extraction(
        self,
        run_id: str,
        settings_hash: str,
        *,
        settings: dict,
        result: dict,
        run_dir: str | None = None,
    ) -> None:
        """Record (or replace) the extraction probe of ``run_id`` with these settings; a
        replaced row keeps its ``created_at``."""
        now = time.time()
        self._write(
            lambda conn: conn.execute(
                f"""
                INSERT INTO extractions ({_EXTRACTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (run_id, settings_hash) DO UPDATE SET
                    settings_json = excluded.settings_json,
                    result_json = excluded.result_json,
                    run_dir = excluded.run_dir,
                    updated_at = excluded.updated_at
                """,
                (
                    run_id,
                    settings_hash,
                    _dumps(settings),
                    _dumps(result),
                    None if run_dir is None else str(run_dir),
                    now,
                    now,
                ),
            )
        )

    # -- reads ------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        return RunRecord.from_row(rows[0]) if rows else None

    def list_runs(self, status: str | None = None) -> list[RunRecord]:
        """All runs (or those with ``status``), oldest first."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        sql = f"SELECT {_COLUMNS} FROM runs"
        args: tuple = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        sql += " ORDER BY created_at, run_id"
        return [RunRecord.from_row(row) for row in self._read(sql, args)]

    def get_extraction(self, run_id: str, settings_hash: str) -> ExtractionRecord | None:
        rows = self._read(
            f"SELECT {_EXTRACTION_COLUMNS} FROM extractions WHERE run_id = ? AND settings_hash = ?",
            (run_id, settings_hash),
        )
        return ExtractionRecord.from_row(rows[0]) if rows else None

    def list_extractions(self, run_id: str | None = None) -> list[ExtractionRecord]:
        """Every extraction (or those of ``run_id``), oldest update first."""
        sql, args = f"SELECT {_EXTRACTION_COLUMNS} FROM extractions", ()
        if run_id is not None:
            sql, args = sql + " WHERE run_id = ?", (run_id,)
        rows = self._read(sql + " ORDER BY updated_at, run_id, settings_hash", args)
        return [ExtractionRecord.from_row(row) for row in rows]

    def latest_extractions(self) -> dict[str, ExtractionRecord]:
        """Each run's most recently recorded extraction, by run_id."""
        return {rec.run_id: rec for rec in self.list_extractions()}

    def is_finished(self, run_id: str) -> bool:
        rows = self._read("SELECT status FROM runs WHERE run_id = ?", (run_id,))
        return bool(rows) and rows[0][0] == "finished"

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"
