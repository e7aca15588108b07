"""Checkpoints that survive ``kill -9`` anywhere: atomic, checksummed, the last two kept.

A checkpoint file is a 48-byte header -- the magic ``KCAPCKPT``, the SHA-256 of the payload and
the payload's length -- followed by the payload, which is what ``torch.save`` writes. A save
writes a temporary file in the run directory, fsyncs it, moves the current checkpoint to
``checkpoint.prev.pt`` and renames the new file into place, so at every instant the directory
holds at least one complete checkpoint. `load_latest` verifies the checksum and length and falls
back to the previous checkpoint, saying why, when the latest is truncated or corrupt.

Files written before checksums (a bare ``torch.save`` zip) still load, unverified.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch

from kcap.errors import KcapError

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"

MAGIC = b"KCAPCKPT"
_HEADER = struct.Struct("<8s32sQ")  # magic, sha256(payload), len(payload)


class CorruptCheckpoint(Exception):
    """A checkpoint file that is truncated, altered or not a checkpoint at all."""


def encode(obj: Any) -> bytes:
    """The bytes of a checkpoint file holding ``obj``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    return _HEADER.pack(MAGIC, hashlib.sha256(payload).digest(), len(payload)) + payload


def decode(data: bytes, name: str = "checkpoint") -> Any:
    """The object in a checkpoint file's bytes; `CorruptCheckpoint` says what is wrong."""
    if data[: len(MAGIC)] == MAGIC:
        if len(data) < _HEADER.size:
            raise CorruptCheckpoint(f"{name} is truncated ({len(data)} bytes, no full header)")
        _, digest, length = _HEADER.unpack_from(data)
        payload = data[_HEADER.size :]
        if len(payload) != length:
            raise CorruptCheckpoint(
                f"{name} is truncated ({len(payload):,} of {length:,} payload bytes)"
            )
        if hashlib.sha256(payload).digest() != digest:
            raise CorruptCheckpoint(f"{name} fails its SHA-256 checksum (the file was altered)")
    elif data[:2] == b"PK":  # a checkpoint from before checksums: a bare torch.save zip
        payload = data
    else:
        raise CorruptCheckpoint(f"{name} is not a kcap checkpoint")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:  # an unverified legacy file can still be damaged
        raise CorruptCheckpoint(f"{name} cannot be read ({type(e).__name__})") from None


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path`` and fsync it (split out so tests can cut it)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(obj: Any, run_dir: Path) -> Path:
    """Write ``obj`` as the run's latest checkpoint, keeping the one before as the previous."""
    run_dir = Path(run_dir)
    data = encode(obj)
    fd, tmp = tempfile.mkstemp(prefix=f".{CHECKPOINT}.", dir=run_dir)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        _write_file(tmp_path, data)
        latest = run_dir / CHECKPOINT
        if latest.is_file():
            os.replace(latest, run_dir / PREVIOUS)
        os.replace(tmp_path, latest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(run_dir)
    return latest


def load(path: Path) -> Any:
    """The object in one checkpoint file; `CorruptCheckpoint` if it is damaged."""
    path = Path(path)
    return decode(path.read_bytes(), str(path))


def exists(run_dir: Path) -> bool:
    """Whether the run directory holds a checkpoint (latest or previous)."""
    run_dir = Path(run_dir)
    return (run_dir / CHECKPOINT).is_file() or (run_dir / PREVIOUS).is_file()


def load_latest(run_dir: Path, warn=None) -> tuple[Any, Path] | None:
    """The newest good checkpoint of a run and its path, or None when it has none.

    A damaged latest checkpoint is reported through ``warn(message)`` and the previous one is
    used; when every checkpoint is damaged a `KcapError` names them and what is wrong.
    """
    run_dir = Path(run_dir)
    problems = []
    for name in (CHECKPOINT, PREVIOUS):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            state = load(path)
        except CorruptCheckpoint as e:
            problems.append(str(e))
            continue
        if problems and warn is not None:
            warn(f"{problems[0]}; using the previous checkpoint {path}")
        return state, path
    if problems:
        raise KcapError("checkpoint", "; ".join(problems) + "; no good checkpoint is left")
    return None
