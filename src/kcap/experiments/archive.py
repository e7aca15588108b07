"""Run records as portable JSON lines: a store's finished runs, loss-free, to commit or carry.

A results store is a local SQLite file beside run directories that hold checkpoints; neither
belongs in git, and a study outlives the machine that ran it (a session's disk, a cluster node).
`kcap runs --export F.jsonl` writes every finished run, one JSON object a line, with all a
report needs and nothing tied to the machine: config, manifest, parameter counts, metrics (the
in-training history inlined from the run directory when the store does not hold it) and
timings; run directories and other absolute paths are left out (the config is kept as run: its
hash is the run's id). `kcap sweep --export F.jsonl` rewrites the file each time a run finishes.
`kcap runs --import F.jsonl` adds such records to a store, created if missing: a run the store
has finished, or is running now, is kept; a failed or interrupted row gives way to the finished
record. Stores of several machines merge this way, and a sweep resumed on a store rebuilt from
its export skips every run the export holds. A record whose run id is not the hash of its config
(edited by hand, or cut from another record) is refused: a sweep would otherwise skip a config
it never ran, on the strength of another's figures.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from kcap.atomic import write_text_atomic
from kcap.errors import KcapError
from kcap.experiments.analysis import history_file
from kcap.experiments.store import ResultsStore, RunRecord
from kcap.training.config import config_hash

__all__ = ["FORMAT", "export_records", "import_records", "portable", "read_records"]

#: The first key of every line: the format and its version.
FORMAT = "kcap-runs/1"


def _machine_free(value: Any) -> Any:
    """``value`` without absolute paths: a dict entry holding one (``run_dir``, quantize's
    ``source_run_dir``) is dropped, at any depth."""
    if isinstance(value, dict):
        return {
            k: _machine_free(v)
            for k, v in value.items()
            if not (isinstance(v, str) and Path(v).is_absolute())
        }
    if isinstance(value, list):
        return [_machine_free(v) for v in value]
    return value


def portable(rec: RunRecord) -> dict[str, Any]:
    """One finished run as a self-contained, machine-free JSON object."""
    if rec.status != "finished":
        raise ValueError(f"run {rec.run_id} is {rec.state}; only finished runs are exported")
    metrics = dict(rec.metrics)
    if not metrics.get("history"):
        history = history_file(rec.run_dir)  # runs of `kcap train` keep it in their directory
        if history:
            metrics["history"] = list(history)
    return {
        "format": FORMAT,
        "run_id": rec.run_id,
        "name": rec.name,
        "config": rec.config,  # as run: its hash is the run's id
        "manifest": _machine_free(rec.manifest),
        "params": rec.params,
        "metrics": _machine_free(metrics),
        "timings": _machine_free(rec.timings),
        "host": rec.host,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
    }


def export_records(records: list[RunRecord], path: Path) -> int:
    """Write the finished ``records`` to ``path`` as JSON lines, whole or not at all; returns
    how many were written."""
    lines = [json.dumps(portable(r), sort_keys=True) for r in records if r.status == "finished"]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_records(path: Path) -> list[RunRecord]:
    """The run records of a JSON-lines export (`KcapError` naming the line on bad input)."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KcapError("--import", f"{where} is not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise KcapError("--import", f"{where}: format must be {FORMAT!r}; got {got!r}")
        missing = [k for k in ("run_id", "config", "metrics") if not obj.get(k)]
        if missing:
            raise KcapError("--import", f"{where} lacks {', '.join(missing)}")
        if not isinstance(obj["config"], dict) or not isinstance(obj["metrics"], dict):
            raise KcapError("--import", f"{where}: config and metrics must be mappings")
        digest = config_hash(obj["config"])
        if digest != str(obj["run_id"]):
            raise KcapError(
                "--import",
                f"{where}: run_id {obj['run_id']} is not the hash of its config ({digest}); "
                "the record was altered",
            )
        out.append(
            RunRecord(
                run_id=str(obj["run_id"]),
                name=obj.get("name"),
                config_hash=None,  # the store computes it from the config
                config=obj["config"],
                manifest=obj.get("manifest"),
                status="finished",
                params=obj.get("params") or {},
                metrics=obj["metrics"],
                timings=obj.get("timings") or {},
                host=obj.get("host"),
                run_dir=None,
                error=None,
                created_at=float(obj.get("created_at") or 0.0),
                updated_at=float(obj.get("updated_at") or 0.0),
            )
        )
    return out


def import_records(store: ResultsStore, records: list[RunRecord]) -> Counter:
    """Add finished ``records`` to ``store``; counts of "added", "replaced" (a failed or
    interrupted row) and "kept" (the store's own finished or running row)."""
    return Counter(store.add_finished(rec) for rec in records)
