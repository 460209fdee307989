"""The one thread of an actor that talks to its device.

A device actor takes two calls at once (a threaded Ray actor, `worker.CALLS_AT_ONCE`), so that
one block's host work (unpacking its rows before the device runs it; masking and summing its
NLL after; Ray's reply) is done while the device runs the other block. The device itself is
used from this single thread only: the backend is made, called and closed here, so its calls
run one at a time in the order they were handed in, and an ACL context, which belongs to the
thread that set the device, is only ever needed on one thread (ACL lets several threads set one
device; a single thread does not depend on it).

A daemon thread, not a ThreadPoolExecutor: a device that never answers (the simulated `hang`
fault) must not keep its process from exiting once Ray lets it go.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class DeviceThread:
    def __init__(self, name: str = "npueval-device"):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=name)
        self._thread.start()

    def run(self, fn: Callable[..., T], *args) -> T:
        """fn(*args) on the device thread, after the jobs handed in before it; its result or its error."""
        future: Future = Future()
        self._jobs.put((future, fn, args))
        return future.result()

    def _serve(self) -> None:
        while True:
            future, fn, args = self._jobs.get()
            if fn is None:
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

    def stop(self) -> None:
        """No more jobs: the thread ends once those handed in before are done."""
        self._jobs.put((Future(), None, ()))
