"""SIGTERM, as `ray job stop`, schedulers and `kill` send it, handled as Ctrl-C is.

Python's default for SIGTERM ends the process on the spot: no `finally` runs, so a run's blocks in
flight are not saved, prepare's partial folder stays, and its worker processes are orphaned. With
`raise_on_sigterm`, SIGTERM raises `Terminated` (a KeyboardInterrupt) in the main thread instead,
and every command unwinds as it does for Ctrl-C. `ray.init` installs SIGTERM handlers of its own
(`sys.exit` in a driver, and a node's clean-up where it starts one): `sigterm_kept` puts this one
back afterwards.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Terminated

_received = False


def _terminate(signum, frame) -> None:
    global _received
    if _received:  # a second SIGTERM while the first unwinds must not cut its clean-up short
        return
    _received = True
    raise Terminated()


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in the main thread (only it can take signals)."""
    global _received
    if threading.current_thread() is threading.main_thread():
        _received = False
        signal.signal(signal.SIGTERM, _terminate)


@contextmanager
def sigterm_kept() -> Iterator[None]:
    """Whatever runs inside (ray.init) leaves this module's SIGTERM handler in place, where it was."""
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _terminate
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGTERM, _terminate)
