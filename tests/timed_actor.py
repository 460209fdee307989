"""A stand-in device actor for the dispatcher's tests (never in the package): `evaluate` takes
`device_s` seconds and says when its call entered and left the actor, two calls at once."""

from __future__ import annotations

import time


class TimedDevice:
    def __init__(self, device_s: float):
        self.device_s = device_s

    def evaluate(self, block_id: int, rows) -> tuple[int, float, float]:
        entered = time.time()
        time.sleep(self.device_s)
        return block_id, entered, time.time()
