"""A backend that keeps a call ledger, for the exactly-once tests (never in the package).

`LedgerFactory` is handed to `run(..., factory=...)`; in every device actor it builds the
simulated backend wrapped in `LedgerBackend`, which appends one line per model batch to
LEDGER/<pid>.log before computing it: the device, and the sha1 of each row. Tests map row
hashes back to window ids from the shards, so the ledger shows which process ran which window.
`nll_many` (a block's batches handed over together) writes every batch's line and applies its
faults in order, as `nll` would one batch at a time, before the list is computed.

Faults at a deterministic point, each once (a marker file remembers it):
- `kill_self_at`: a row hash, or several; the actor's process kills itself (SIGKILL) when it gets
  one of those rows (once per row).
- `kill_pid_at`: (row hash, pid); that process (the driver) is killed instead.
- `fail_at`: a row hash; every batch holding it raises, as a device that keeps failing would.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npueval.actors.simulated import SimulatedBackend


def row_hash(row: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(row, dtype=np.int32).tobytes()).hexdigest()


@dataclass(frozen=True)
class LedgerFactory:
    ledger: str
    kill_self_at: str | tuple[str, ...] | None = None
    kill_pid_at: tuple[str, int] | None = None
    fail_at: str | None = None

    def __call__(self, spec, model_path):
        return LedgerBackend(self, SimulatedBackend(spec.batch_size, spec.seq_len, spec.device_ms))


class LedgerBackend:
    def __init__(self, factory: LedgerFactory, inner: SimulatedBackend):
        self.factory, self.inner = factory, inner
        self.batch_size, self.seq_len = inner.batch_size, inner.seq_len
        Path(factory.ledger).mkdir(parents=True, exist_ok=True)
        self.log = open(Path(factory.ledger) / f"{os.getpid()}.log", "a", encoding="utf-8")  # noqa: SIM115 - the backend's life

    def nll(self, input_ids: np.ndarray) -> np.ndarray:
        self._reach(input_ids)
        return self.inner.nll(input_ids)

    def nll_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        for batch in batches:  # in the order the device reaches them
            self._reach(batch)
        return self.inner.nll_many(batches)

    def _reach(self, input_ids: np.ndarray) -> None:
        """The batch reaches the device: its ledger line, then its faults."""
        hashes = [row_hash(r) for r in input_ids]
        self.log.write(" ".join([os.environ.get("ASCEND_RT_VISIBLE_DEVICES", "-"), *hashes]) + "\n")
        self.log.flush()
        f = self.factory
        if f.fail_at in hashes:
            raise RuntimeError("device error 507011 (simulated fault)")
        kill_rows = (f.kill_self_at,) if isinstance(f.kill_self_at, str) else f.kill_self_at or ()
        for row in kill_rows:
            if row in hashes and self._first_time(f"kill-self-{row[:16]}"):
                os.kill(os.getpid(), signal.SIGKILL)
        if f.kill_pid_at and f.kill_pid_at[0] in hashes and self._first_time("kill-pid"):
            os.kill(f.kill_pid_at[1], signal.SIGKILL)

    def _first_time(self, what: str) -> bool:
        marker = Path(self.factory.ledger) / f"{what}.done"
        try:
            marker.touch(exist_ok=False)
            return True
        except FileExistsError:
            return False

    def device_seconds(self) -> float:
        return self.inner.device_seconds()

    def close(self) -> None:
        self.log.close()


def read_ledger(folder: Path) -> dict[int, list[list[str]]]:
    """pid → the row hashes of each batch it ran, in order."""
    out = {}
    for path in sorted(Path(folder).glob("*.log")):
        out[int(path.stem)] = [line.split()[1:] for line in path.read_text().splitlines()]
    return out
