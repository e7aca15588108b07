"""Writes that leave nothing half-written: a folder is staged beside its target and renamed into
place, a file is written beside itself and replaced. When a write fails (a full disk, a path
that cannot be written) what was begun is removed, folders created on the way included, and the
`OSError` names the target, so the CLI prints one line ``Error: PATH: reason``
(`kcap.cli.main.KcapGroup`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kcap.errors import require

__all__ = ["require_writable", "require_writable_file", "staged_dir", "write_text_atomic"]


def require_writable(path: Path, field: str) -> None:
    """Refuse (a `KcapError` on ``field``) a ``path`` whose nearest existing folder, itself or
    above it, cannot hold new files; ``path`` itself, if it exists, must be a folder."""
    path = Path(path)
    if path.exists():
        require(path.is_dir(), field, f"{path} exists and is not a directory")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    require(parent.is_dir() and _can_create_in(parent), field, f"{path} is not writable")


def require_writable_file(path: Path, field: str) -> None:
    """Refuse (a `KcapError` on ``field``) an output file ``path`` that is a folder, or whose
    folder cannot be created or written."""
    path = Path(path)
    require_writable(path.parent, field)
    require(not path.is_dir(), field, f"{path} is a directory")


def _can_create_in(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; the folders it created, deepest first."""
    created = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _name_target(e: OSError, target: Path, tmp: Path) -> None:
    """A failed write names its target, not the temporary path (and writes to an open file
    carry no file name at all)."""
    if e.filename is None or str(e.filename).startswith(str(tmp)):
        e.filename = str(target)


def _beside(path: Path) -> Path:
    """A new, unused name beside ``path`` for staging it."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def staged_dir(out: Path, *, merge: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; when the block succeeds it becomes ``out``.

    Without ``merge`` an existing ``out`` is replaced as a whole; with ``merge`` each entry of
    the staged folder replaces its namesake in ``out`` and other entries of ``out`` stay. When
    the block (or the move) fails, the staged folder and the parents created for it are removed.
    """
    out = Path(out)
    created: list[Path] = []
    tmp = _beside(out)
    made = False
    try:
        created = _make_parents(out.parent)
        tmp.mkdir()  # the umask's mode, which the folder keeps once renamed
        made = True
        yield tmp
        if merge and out.is_dir():
            for entry in sorted(tmp.iterdir()):
                target = out / entry.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                entry.replace(target)
            tmp.rmdir()
        else:
            if out.is_dir() and not out.is_symlink():
                shutil.rmtree(out)
            tmp.rename(out)
    except BaseException as e:
        if made:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        if isinstance(e, OSError):
            _name_target(e, out, tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it (never half a file)."""
    path = Path(path)
    created: list[Path] = []
    tmp = _beside(path)
    try:
        created = _make_parents(path.parent)
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _remove_empty(created)
        if isinstance(e, OSError):
            _name_target(e, path, tmp)
        raise
