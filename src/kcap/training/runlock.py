"""One writer per run directory: an OS file lock held while a process trains in it.

``RUN_DIR/.lock`` is locked with ``flock`` for as long as a process trains there; the lock goes
with the process, however it ends (``kill -9`` included), so a free lock on a run the store
calls "running" means the process that ran it is gone. The file records who holds it (pid and
host) for the error message of a second writer.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from pathlib import Path

from kcap.errors import KcapError

LOCK = ".lock"
_TRIES, _WAIT_S = 20, 0.05  # a probe by `holder` holds the lock for an instant: retry ~1 s


def holder(run_dir: Path) -> str | None:
    """``pid N on HOST`` of the process training in ``run_dir``, or None when nobody is."""
    path = Path(run_dir) / LOCK
    if not path.is_file():
        return None
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _who(f)
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def _who(f) -> str:
    """Who holds the lock, as its holder wrote it into the lock file."""
    f.seek(0)
    return f.read().strip() or "another process"


def clear(run_dir: Path) -> None:
    """Remove everything in ``run_dir`` but its lock file (start over, lock still held)."""
    for path in Path(run_dir).iterdir():
        if path.name == LOCK:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


class RunLock:
    """``with RunLock(run_dir): ...`` -- hold the run directory's lock, or fail at once.

    A directory this lock created is removed again when the block fails and nothing but the
    lock file was written there, so a refused input leaves nothing behind.
    """

    def __init__(self, run_dir: str | Path, field: str = "--out"):
        self.run_dir = Path(run_dir)
        self.field = field
        self._file = None
        self._created = False

    def __enter__(self) -> RunLock:
        self._created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.run_dir / LOCK, "a+")
        for attempt in range(_TRIES):
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 < _TRIES:
                    time.sleep(_WAIT_S)
                    continue
                who = _who(f)
                f.close()
                raise KcapError(
                    self.field, f"{self.run_dir} is in use: a run is training there ({who})"
                ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._file is None:
            return
        self._file.close()  # closing the descriptor releases the lock
        self._file = None
        if exc_type is not None and self._created:
            leftovers = {p.name for p in self.run_dir.iterdir()}
            if leftovers <= {LOCK}:
                shutil.rmtree(self.run_dir, ignore_errors=True)
