"""Where a run's time goes: its phases, and each block's time on its device.

`Phases` records the steps of a run (Ray started or joined, shards verified, the model shipped,
the devices ready, the evaluation, the reduction, the writing, Ray stopped), each with its start
and end in seconds from the run's start; results.json keeps them (`phases`) and `-v` logs each as
it ends. `BlockTimes` watches the run's events (eval/driver/events.py) and keeps, for every block
this command evaluated, its device, when the driver sent it and got it back, and when its device
ran it; OUT/timeline.parquet holds them, and `npueval report --plot` draws them per device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .events import RunEvents
from .results_file import Phase

log = logging.getLogger(__name__)

TIMELINE = "timeline.parquet"


class Phases:
    def __init__(self, started: float):
        self.started = started  # time.perf_counter() at the run's start
        self.done: list[Phase] = []

    def add(self, name: str, start: float, end: float) -> None:
        """A phase between two time.perf_counter() readings."""
        phase = Phase(name, round(start - self.started, 6), round(end - self.started, 6))
        self.done.append(phase)
        log.debug("phase %-12s %7.3f → %7.3f s (%.3f s)", name, phase.start_s, phase.end_s, phase.end_s - phase.start_s)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, start, time.perf_counter())

    def all(self) -> tuple[Phase, ...]:
        return tuple(sorted(self.done, key=lambda p: (p.start_s, p.end_s)))


@dataclass
class _BlockTime:
    sent: float
    returned: float = 0.0
    node: str = ""
    device: str = ""
    windows: int = 0
    device_start: float = 0.0
    device_end: float = 0.0


class BlockTimes(RunEvents):
    """Each block's times, passing every event on to `forward` (the caller's watcher)."""

    def __init__(self, forward: RunEvents, started: float, started_epoch: float):
        self.forward, self.started, self.started_epoch = forward, started, started_epoch
        self.blocks: dict[int, _BlockTime] = {}
        self.first_sent = self.first_returned = None

    def evaluation_started(self, at: float) -> None:
        self.forward.evaluation_started(at)

    def block_read(self, block, seconds: float) -> None:
        self.forward.block_read(block, seconds)

    def block_sent(self, block, device: str, at: float) -> None:
        self.blocks[block.block_id] = _BlockTime(sent=at)  # sent again after a failure: the last send counts
        self.first_sent = self.first_sent or at
        self.forward.block_sent(block, device, at)

    def result_handled(self, result, returned_at: float, seconds: float) -> None:
        t = self.blocks.setdefault(result.block_id, _BlockTime(sent=returned_at))
        t.returned, t.node, t.device, t.windows = returned_at, result.node_id, result.device, result.windows
        t.device_start, t.device_end = result.device_start, result.device_end
        self.first_returned = self.first_returned or returned_at
        self.forward.result_handled(result, returned_at, seconds)

    def evaluation_ended(self, at: float) -> None:
        self.forward.evaluation_ended(at)

    def table(self):
        """One row per block evaluated, in block order, times in seconds from the run's start:
        sent and returned on the driver's clock, device start and end on the device host's (NaN
        where the backend said nothing)."""
        import numpy as np
        import pyarrow as pa

        done = sorted((k, t) for k, t in self.blocks.items() if t.returned)

        def on_device(epoch: float) -> float:
            return epoch - self.started_epoch if epoch else float("nan")

        return pa.table({
            "block_id": pa.array([k for k, _ in done], pa.int64()),
            "node": pa.array([t.node for _, t in done], pa.string()).dictionary_encode(),
            "device": pa.array([t.device for _, t in done], pa.string()).dictionary_encode(),
            "windows": pa.array([t.windows for _, t in done], pa.int64()),
            "sent_s": np.array([t.sent - self.started for _, t in done], np.float64),
            "returned_s": np.array([t.returned - self.started for _, t in done], np.float64),
            "device_start_s": np.array([on_device(t.device_start) for _, t in done], np.float64),
            "device_end_s": np.array([on_device(t.device_end) for _, t in done], np.float64),
        })
