"""The Rich progress bar every long step of kcap shows: description, bar, done / total, the
caller's own fields, elapsed time and ETA."""

from __future__ import annotations

from typing import Any


def progress_bar(*fields: str, enabled: bool = True, console: Any = None):
    """A `rich.progress.Progress` with one text column per format string in ``fields`` (e.g.
    ``"loss {task.fields[loss]:.3f}"``), disabled (silent) unless ``enabled``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(f) for f in fields),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )
