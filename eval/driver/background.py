"""Driver threads whose work can wait: reading blocks ahead, saving finished ones.

The driver shares its host with Ray and the device actors (at 32 simulated devices, all on two
cores). CPU these threads take while an actor is waiting to start its device is device time
lost: at the start of a run, reading the next round of blocks delayed the last device's first
block from 0.37 s to 0.55–0.70 s (BENCHMARKS.md, "`npueval run` scaling"). So they run at the lowest
scheduling priority, below the dispatch loop and below the actors (nice 0 for NPU and simulated devices
in a Ray npueval starts, Ray's 15 otherwise): when the CPU is free they run at full speed, when it is contended
they go last. Linux
applies a nice value per thread; elsewhere the priority is left as it is (it changes no result,
only who waits).
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

#: The nice value of a background thread: the lowest priority there is, below Ray's workers (15).
BACKGROUND_NICE = 19


def lower_this_thread() -> None:
    """Give the calling thread the lowest scheduling priority (Linux: its own nice value)."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(BACKGROUND_NICE, os.getpriority(os.PRIO_PROCESS, tid)))
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: only the timing differs
        log.debug("thread %s keeps its priority: %s", threading.current_thread().name, exc)


class Background:
    """`work(stop)` in a thread of its own from now on, at the driver's priority (it is on the run's
    path: the shards' check while Ray starts, Ray's stop while the results are written);
    `result()` waits for it and returns what it returned, or raises what it raised.

    Used as a context manager, it is joined on the way out, having set `stop` (a threading.Event
    that `work` may poll to end early): a run that fails while the thread still works must not end
    the process under it. Python ends a daemon thread that is still running at exit with a forced
    unwind, and one inside pyarrow's C++ then aborts the process ("terminate called without an
    active exception", exit -6) after the run's one-line error."""

    def __init__(self, work, name: str):
        import time

        self.started = self.ended = time.perf_counter()
        self._value, self._error = None, None
        self._stop = threading.Event()

        def run() -> None:
            try:
                self._value = work(self._stop)
            except BaseException as exc:  # handed to the caller of result()
                self._error = exc
            finally:
                self.ended = time.perf_counter()

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
