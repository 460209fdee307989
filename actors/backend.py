"""The Backend protocol: the only thing that differs between devices (DESIGN.md, Contracts).

`nll(x)[:, j]` is the NLL of token `x[:, j + 1]` predicted from `x[:, :j + 1]`. A backend
takes a batch of at most `batch_size` rows of `seq_len` ids; a static-shape model pads a
short batch itself and returns only the real rows.

`nll_many(batches)` hands a block's batches over together, so that a device with a queue (an
NPU through ais_bench's `infer_pipeline`) runs them back to back instead of idling while the
host wakes up between calls; its results are those of `nll` on each batch, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    batch_size: int  # static batch of the compiled model
    seq_len: int  # L

    def nll(self, input_ids: np.ndarray) -> np.ndarray:
        """(b, L) integer ids, b <= batch_size → (b, L - 1) float32."""
        ...

    def nll_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        """A block's batches together, so a device with a queue runs them back to back; same
        results as nll on each."""
        ...

    def device_seconds(self) -> float:
        """Pure inference time so far."""
        ...

    def close(self) -> None: ...


def check_batch(input_ids: np.ndarray, batch_size: int, seq_len: int) -> np.ndarray:
    """The batch as int64 (b, L), or a ValueError that says what is wrong with it."""
    if input_ids.ndim != 2 or input_ids.shape[1] != seq_len or not 1 <= input_ids.shape[0] <= batch_size:
        raise ValueError(f"a batch must be (1…{batch_size}, {seq_len}) ids, not {input_ids.shape}")
    return input_ids.astype(np.int64, copy=False)


def pad_rows(input_ids: np.ndarray, batch_size: int, fill: int = 0) -> np.ndarray:
    """A short batch filled up to the model's static batch with rows of `fill`."""
    if input_ids.shape[0] == batch_size:
        return input_ids
    padded = np.full((batch_size, input_ids.shape[1]), fill, dtype=input_ids.dtype)
    padded[: input_ids.shape[0]] = input_ids
    return padded
