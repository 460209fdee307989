"""The simulated backend: a product feature that stands in for NPUs (DESIGN.md, Contracts).

For scale and overhead tests and benchmarks on machines without a device. Its NLL is a
documented pure function of the ids, so anyone can recompute a run's numbers with numpy
from the shards alone:

    nll[:, j] = 1 + ((x[:, j] * 7919 + x[:, j + 1] * 104729 + j) % 9973) / 9973

in int64 arithmetic, then float32. Each call sleeps `device_ms` per model batch.
"""

from __future__ import annotations

import time

import numpy as np

from .backend import check_batch


def simulated_nll(input_ids: np.ndarray) -> np.ndarray:
    """(b, L) ids → (b, L - 1) float32, the documented function."""
    x = input_ids.astype(np.int64)
    j = np.arange(x.shape[1] - 1, dtype=np.int64)
    return (1 + ((x[:, :-1] * 7919 + x[:, 1:] * 104729 + j) % 9973) / 9973).astype(np.float32)


class SimulatedBackend:
    def __init__(self, batch_size: int, seq_len: int, device_ms: float = 0.0):
        if device_ms < 0:
            raise ValueError(f"device_ms must be 0 or more, not {device_ms}")
        self.batch_size, self.seq_len, self.device_ms = batch_size, seq_len, device_ms
        self._device_s = 0.0

    def nll(self, input_ids: np.ndarray) -> np.ndarray:
        x = check_batch(input_ids, self.batch_size, self.seq_len)
        if self.device_ms:
            time.sleep(self.device_ms / 1000)
        self._device_s += self.device_ms / 1000
        return simulated_nll(x)

    def device_seconds(self) -> float:
        return self._device_s

    def close(self) -> None:
        pass
