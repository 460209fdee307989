"""Ctrl-C and SIGTERM (`ray job stop`, schedulers, `kill`): both unwind a command the same way.

Python's default for SIGTERM ends the process on the spot: no `finally` runs, so a run's blocks in
flight are not saved, prepare's partial folder stays, and its worker processes are orphaned. With
`handle_stops`, SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread, as Ctrl-C
raises KeyboardInterrupt, and every command unwinds as it does for Ctrl-C. `ray.init` installs
SIGTERM handlers of its own (`sys.exit` in a driver, and a node's clean-up where it starts one):
`sigterm_kept` puts this one back afterwards.

An exception raised between any two bytecodes can leave some code broken: a process pool
interrupted while it starts its threads cannot be shut down ("cannot join thread before it is
started"), or waits forever. Inside `shielded()` a stop waits until the block has ended.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Terminated

_shields = 0
_pending: type[KeyboardInterrupt] | None = None  # a stop that came inside a shield
_terminated = False  # SIGTERM was raised once: a second one must not cut its clean-up short


def _stop(signum, frame) -> None:
    global _pending, _terminated
    if signum == signal.SIGTERM:
        if _terminated:
            return
        _terminated = True
    stop = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    if _shields:
        _pending = _pending or stop
        return
    raise stop()


def handle_stops() -> None:
    """From now on Ctrl-C and SIGTERM raise in the main thread (only it can take signals), except
    inside `shielded()`."""
    global _terminated, _pending
    if threading.current_thread() is threading.main_thread():
        _terminated, _pending = False, None
        signal.signal(signal.SIGTERM, _stop)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored
            signal.signal(signal.SIGINT, _stop)


@contextmanager
def shielded() -> Iterator[None]:
    """A Ctrl-C or SIGTERM that comes while the block runs is raised once it has ended."""
    global _shields, _pending
    _shields += 1
    try:
        yield
    finally:
        _shields -= 1
        if not _shields and _pending is not None:
            stop, _pending = _pending, None
            raise stop()


@contextmanager
def sigterm_kept() -> Iterator[None]:
    """Whatever runs inside (ray.init) leaves this module's SIGTERM handler in place, where it was."""
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _stop
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGTERM, _stop)
