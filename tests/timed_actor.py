"""A stand-in device actor for the dispatcher's tests (never in the package): `evaluate` takes
`device_s` seconds and says when its call entered and left the actor, two calls at once."""

from __future__ import annotations

import time


class TimedDevice:
    """`start_s`: how long it takes to come up (its describe() answers after that)."""

    def __init__(self, device_s: float, name: str = "dev", start_s: float = 0.0):
        time.sleep(start_s)
        self.device_s, self.name, self.up = device_s, name, time.time()

    def describe(self):
        from npueval.actors.worker import DeviceInfo

        return DeviceInfo(node="n", device=self.name, batch_size=1, seq_len=2, host="h", pid=0)

    def evaluate(self, block_id: int, rows) -> tuple[int, float, float, str, float]:
        """The block, when it entered and left, this device's name and when it came up."""
        entered = time.time()
        time.sleep(self.device_s)
        return block_id, entered, time.time(), self.name, self.up


class PoisonedDevice:
    """A stand-in device whose process ends inside the call for block `poison`, as ais_bench's
    infer_pipeline ends it on an error, after leaving a note as DeviceWorker does; with
    `hang`, the call hangs there instead, once. The actor Ray restarts in its place reports the
    note through describe(), as DeviceWorker does. Every call that enters is logged in NOTES/calls;
    the hang happens once in all (NOTES/hung)."""

    def __init__(self, notes: str, poison: int, hang: bool = False):
        import json
        from pathlib import Path

        import ray

        self.notes, self.poison, self.hang = Path(notes), poison, hang
        self.actor = ray.get_runtime_context().get_actor_id()
        self.note = self.notes / f"{self.actor}.json"
        self.previous = json.loads(self.note.read_text()) if self.note.exists() else None
        self.note.unlink(missing_ok=True)

    def describe(self):
        from npueval.actors.node_files import CallInProgress
        from npueval.actors.worker import DeviceInfo

        death = None if self.previous is None else CallInProgress(**self.previous)
        return DeviceInfo(node="n", device="x", batch_size=1, seq_len=2, host="h", pid=0, previous_death=death)

    def evaluate(self, block_id: int, rows) -> int:
        import json
        import os

        with open(self.notes / "calls", "a") as f:
            f.write(json.dumps({"actor": self.actor, "block": block_id}) + "\n")
        hung = self.notes / "hung"
        if block_id == self.poison and not (self.hang and hung.exists()):
            self.note.write_text(json.dumps({"block": block_id, "call": "ais_bench infer_pipeline", "device": "x"}))
            if self.hang:
                hung.touch()
                time.sleep(3600)
            os.abort()
        time.sleep(0.05)
        return block_id
