"""User-facing errors: one line, naming the offending field and what is allowed."""

from __future__ import annotations


class KcapError(ValueError):
    """An input error a user can fix. The CLI prints it on one line and exits with code 2."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def require(condition: bool, field: str, message: str) -> None:
    """Raise `KcapError(field, message)` unless `condition` holds."""
    if not condition:
        raise KcapError(field, message)
