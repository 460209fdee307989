"""The simulated backend: a product feature that stands in for NPUs (docs/design.md, "Backend").

For scale and overhead tests and benchmarks on machines without a device. Its NLL is a
documented pure function of the ids, so anyone can recompute a run's numbers with numpy
from the shards alone:

    nll[:, j] = 1 + ((x[:, j] * 7919 + x[:, j + 1] * 104729 + j) % 9973) / 9973

in int64 arithmetic, then float32.

**Device time.** `nll` models a synchronous device: each call sleeps `device_ms`, so the device
idles while the host gets from one call to the next. `nll_many` models a device with a queue (an
NPU through ais_bench's `infer_pipeline`): the whole list is handed over at t0 and batch k is done
at t0 + (k + 1)·device_ms, however late the host wakes up. It computes every batch's NLL (host
work, overlapping the device time) and then sleeps until t0 + n·device_ms, one deadline. Either
way `device_seconds` grows by device_ms per batch.

**Test hook** (not a user flag): faults for reliability tests and scenarios (RELIABILITY.md),
NPUEVAL_SIMULATED_FAULTS names a JSON file, which each actor reads when it starts (so a Ray
that is already running picks up a new file with the next run's actors). It holds a list:

    [{"device": "npu:1", "kind": "nan", "batch": 3},    # batch 3 of npu:1: NaN in row 0
     {"device": "npu:2", "kind": "inf", "batch": 1},    # +Inf instead
     {"device": "npu:0", "kind": "hang", "batch": 2},   # batch 2 never returns
     {"device": "npu:0", "kind": "error", "batch": 4},  # batch 4 raises RuntimeError, as a device call can
     {"device": "npu:3", "kind": "slow", "factor": 5}]  # every batch takes 5 × device_ms

`batch` counts the device's model batches from 1, through `nll` and `nll_many` alike; under
`nll_many` a hang fires as soon as the list holding that batch is reached. A fault fires only in
the actor's first life: an actor Ray restarted (after a kill or a --block-timeout) runs clean,
so a scenario's faults are points, not loops.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .backend import check_batch


def simulated_nll(input_ids: np.ndarray) -> np.ndarray:
    """(b, L) ids → (b, L - 1) float32, the documented function."""
    x = input_ids.astype(np.int64)
    j = np.arange(x.shape[1] - 1, dtype=np.int64)
    return (1 + ((x[:, :-1] * 7919 + x[:, 1:] * 104729 + j) % 9973) / 9973).astype(np.float32)


FAULTS_ENV = "NPUEVAL_SIMULATED_FAULTS"
FAULT_KINDS = ("nan", "inf", "hang", "error", "slow")


@dataclass(frozen=True)
class Fault:
    kind: str  # nan | inf | hang | error | slow
    batch: int = 0  # nan, inf, hang, error: the device's batch it hits, from 1
    factor: float = 1.0  # slow: device_ms is multiplied by it


def faults_for(device: str, environ=os.environ) -> tuple[Fault, ...]:
    """This device's faults from the file NPUEVAL_SIMULATED_FAULTS names (see the module docstring)."""
    path = environ.get(FAULTS_ENV)
    if not path or not os.path.exists(path):
        return ()
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    faults = []
    for entry in entries:
        if entry.get("device") != device:
            continue
        if entry.get("kind") not in FAULT_KINDS:
            raise ValueError(f"{FAULTS_ENV}: kind {entry.get('kind')!r} is not one of {', '.join(FAULT_KINDS)}")
        faults.append(Fault(entry["kind"], int(entry.get("batch", 0)), float(entry.get("factor", 1.0))))
    return tuple(faults)


def _first_life_faults(npu: str | None) -> tuple[Fault, ...]:
    import ray

    if npu is None or ray.get_runtime_context().was_current_actor_reconstructed:
        return ()
    return faults_for(f"npu:{npu}")


class SimulatedBackend:
    def __init__(self, batch_size: int, seq_len: int, device_ms: float = 0.0, faults: tuple[Fault, ...] = ()):
        if device_ms < 0:
            raise ValueError(f"device_ms must be 0 or more, not {device_ms}")
        self.batch_size, self.seq_len = batch_size, seq_len
        self.device_ms = device_ms * max((f.factor for f in faults if f.kind == "slow"), default=1.0)
        self.faults = {f.batch: f for f in faults if f.kind != "slow"}
        self._device_s, self._batches = 0.0, 0

    @classmethod
    def open(cls, spec, model_path: None, npu: str | None) -> SimulatedBackend:
        """In a device actor: its device's faults from the test hook, in the actor's first life only."""
        return cls(spec.batch_size, spec.seq_len, spec.device_ms, _first_life_faults(npu))

    def nll(self, input_ids: np.ndarray) -> np.ndarray:
        x = check_batch(input_ids, self.batch_size, self.seq_len)
        fault = self._next_batch()
        if self.device_ms:
            time.sleep(self.device_ms / 1000)
        return self._compute(x, fault)

    def nll_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        t0 = time.perf_counter()  # the list reaches the device's queue
        checked = [check_batch(b, self.batch_size, self.seq_len) for b in batches]  # all, before any is counted
        faults = [self._next_batch() for _ in checked]  # a hang anywhere in the list hangs here
        results = [self._compute(x, fault) for x, fault in zip(checked, faults)]
        # The device ran the batches back to back from t0: done at t0 + n·device_ms, whatever
        # the host spent above (one deadline, so the host's wake-ups add no device time).
        left = t0 + len(checked) * self.device_ms / 1000 - time.perf_counter()
        if left > 0:
            time.sleep(left)
        return results

    def _next_batch(self) -> Fault | None:
        """Count one more model batch; its fault, after hanging forever if that is the fault."""
        self._batches += 1
        fault = self.faults.get(self._batches)
        if fault is not None and fault.kind == "hang":
            while True:  # a device that never answers; only killing the actor ends it
                time.sleep(3600)
        if fault is not None and fault.kind == "error":
            raise RuntimeError(f"simulated device error on batch {self._batches}")
        return fault

    def _compute(self, x: np.ndarray, fault: Fault | None) -> np.ndarray:
        """One batch's NLL, with its nan or inf fault, and its device time counted."""
        self._device_s += self.device_ms / 1000
        nll = simulated_nll(x)
        if fault is not None:
            nll[0, 0] = np.nan if fault.kind == "nan" else np.inf
        return nll

    def device_seconds(self) -> float:
        return self._device_s

    def close(self) -> None:
        pass
