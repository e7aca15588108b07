"""Stopping cleanly: SIGTERM/SIGINT become a stop request, a second signal stops at once.

A long step loop calls `pending()` between steps; when a stop is pending it writes a checkpoint
and raises `RunInterrupted`, which carries the signal (exit code ``128 + signal``) and the step.
A second signal raises `Aborted` wherever the process is, so a stuck process can still be
stopped. `watch_parent` makes a worker process stop by itself when its parent is gone (a
coordinator killed with ``kill -9`` never gets to stop it).

Handlers are installed by the process's entry point (`kcap train`, a sweep worker, the sweep
coordinator), never on import, and only in the main thread.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = [
    "Aborted",
    "RunInterrupted",
    "clear",
    "handle_signals",
    "pending",
    "request",
    "stop_handler",
    "watch_parent",
]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(Exception):
    """A run stopped on request after writing a checkpoint (it can be resumed)."""

    def __init__(self, reason: str, step: int | None = None, exit_code: int = 1):
        self.reason, self.step, self.exit_code = reason, step, exit_code
        at = f" at step {step:,}" if step is not None else ""
        super().__init__(f"interrupted by {reason}{at}")

    def __reduce__(self):  # survives pickling across a process pool
        return (RunInterrupted, (self.reason, self.step, self.exit_code))


class Aborted(BaseException):
    """A second stop request: stop now, without a checkpoint."""

    def __init__(self, reason: str, exit_code: int = 1):
        self.reason, self.exit_code = reason, exit_code
        super().__init__(f"aborted by a second {reason}")

    def __reduce__(self):
        return (Aborted, (self.reason, self.exit_code))


_state: dict[str, object] = {"reason": None, "code": 1}
_lock = threading.Lock()


def request(reason: str, exit_code: int = 1) -> bool:
    """Ask the running loop to stop; True if this is the first request."""
    with _lock:
        if _state["reason"] is not None:
            return False
        _state["reason"], _state["code"] = reason, exit_code
        return True


def pending() -> tuple[str, int] | None:
    """``(reason, exit code)`` of a pending stop request, or None."""
    reason = _state["reason"]
    return None if reason is None else (str(reason), int(_state["code"]))  # type: ignore[arg-type]


def clear() -> None:
    """Forget a stop request (a new run in the same process starts clean)."""
    with _lock:
        _state["reason"], _state["code"] = None, 1


def _handler(on_first: Callable[[str, int], None] | None):
    def handle(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        code = 128 + signum
        if request(name, code):
            if on_first is not None:
                on_first(name, code)
            return
        raise Aborted(name, code)

    return handle


@contextmanager
def handle_signals(on_first: Callable[[str, int], None] | None = None) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT request a stop (``on_first(name, code)`` is called
    on the first one) and a second signal raises `Aborted`; the old handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    clear()
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler(on_first))
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def stop_handler():
    """A signal handler for a process with no block to leave (a sweep worker): the first signal
    requests a stop, a second raises `Aborted`."""
    return _handler(None)


def watch_parent(
    parent: int | None = None,
    busy: Callable[[], bool] = lambda: True,
    grace_s: float = 60.0,
    every_s: float = 0.2,
) -> threading.Thread:
    """Stop this process when its parent (pid ``parent``, default: the current one) exits. An
    idle process (``busy()`` false) exits at once; a busy one gets a stop request (its run
    checkpoints and ends) and exits when it is idle again, or ``grace_s`` later at the latest.
    Pass the parent's pid from the parent: one that died before this call is then noticed."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        request("the coordinator exiting", 1)
        deadline = time.monotonic() + grace_s
        while busy() and time.monotonic() < deadline:
            time.sleep(every_s)
        os._exit(1)

    thread = threading.Thread(target=watch, name="kcap-parent-watch", daemon=True)
    thread.start()
    return thread
