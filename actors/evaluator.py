"""What one device does with one block of windows: per-window NLL sums (DESIGN.md, Block result).

A plain class, so tests build it directly; the driver makes it remote in one place. Column j
of `nll` is the NLL of token j + 1, so a window's scored columns are
score_from − 1 ≤ j < n_valid − 1 (positions score_from ≤ t < n_valid).

With `pipeline` (the default) a block's batches go to the backend in one `nll_many` call, so a
device with a queue runs them back to back; without it (`--no-pipeline`), one `nll` call per
batch. The sums are the same bits either way: the same arrays are masked and summed per batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from .backend import Backend


@dataclass(frozen=True)
class BlockResult:
    block_id: int
    node_id: str
    device: str
    nll_sum: float  # float64, the sum of the per-window sums
    scored_tokens: int
    windows: int
    batches: int
    device_s: float
    wall_s: float
    window_ids: np.ndarray = field(repr=False)  # int64 (n,)
    window_nll: np.ndarray = field(repr=False)  # float64 (n,)
    window_scored: np.ndarray = field(repr=False)  # int64 (n,)
    check: CheckStats | None = None  # --check-against: this block's batches also run on the host

    def totals_only(self) -> BlockResult:
        """The block without its per-window arrays (once saved to disk, a long run keeps only this)."""
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float64)
        return replace(self, window_ids=empty_i, window_nll=empty_f, window_scored=empty_i)


@dataclass(frozen=True)
class CheckStats:
    """The device's per-token NLL against the host ONNX model's, over scored positions."""

    batches: int
    tokens: int
    max_abs: float
    max_rel: float

    @staticmethod
    def merge(stats: list[CheckStats]) -> CheckStats | None:
        stats = [s for s in stats if s is not None and s.batches]
        if not stats:
            return None
        return CheckStats(sum(s.batches for s in stats), sum(s.tokens for s in stats),
                          max(s.max_abs for s in stats), max(s.max_rel for s in stats))


def scored_mask(score_from: np.ndarray, n_valid: np.ndarray, seq_len: int) -> np.ndarray:
    """(n, L − 1) bool: the nll columns each window scores."""
    j = np.arange(seq_len - 1)
    return (j >= (score_from[:, None] - 1)) & (j < (n_valid[:, None] - 1))


class Evaluator:
    """`reference` (optional) is the host ONNX model of `--check-against`: the first
    `check_batches` batches this evaluator runs also go through it, and the per-token NLL of
    both are compared over the scored positions. `pipeline`: a block's batches in one
    `nll_many` call (see the module docstring)."""

    def __init__(self, backend: Backend, node_id: str = "local", device: str = "0",
                 reference: Backend | None = None, check_batches: int = 0, pipeline: bool = True):
        self.backend, self.node_id, self.device = backend, node_id, device
        self.reference, self._check_left = reference, check_batches if reference is not None else 0
        self.pipeline = pipeline

    def evaluate(self, block_id: int, input_ids: np.ndarray, score_from: np.ndarray, n_valid: np.ndarray,
                 window_ids: np.ndarray) -> BlockResult:
        start, device_before = time.perf_counter(), self.backend.device_seconds()
        batch = self.backend.batch_size
        mask = scored_mask(score_from.astype(np.int64), n_valid.astype(np.int64), input_ids.shape[1])
        sums = np.empty(input_ids.shape[0], dtype=np.float64)
        starts = range(0, input_ids.shape[0], batch)
        checks = []
        # strict: a backend that returned fewer results than batches must not leave sums unset.
        for lo, nll in zip(starts, self._nll([input_ids[lo: lo + batch] for lo in starts]), strict=True):
            nll = nll.astype(np.float64)
            sums[lo: lo + batch] = np.where(mask[lo: lo + batch], nll, 0.0).sum(axis=1)
            if self._check_left > 0:
                self._check_left -= 1
                checks.append(self._check(input_ids[lo: lo + batch], nll, mask[lo: lo + batch]))
        batches = len(starts)
        scored = mask.sum(axis=1).astype(np.int64)
        return BlockResult(
            block_id=block_id,
            node_id=self.node_id,
            device=self.device,
            nll_sum=float(sums.sum()),
            scored_tokens=int(scored.sum()),
            windows=int(input_ids.shape[0]),
            batches=batches,
            device_s=self.backend.device_seconds() - device_before,
            wall_s=time.perf_counter() - start,
            window_ids=window_ids.astype(np.int64),
            window_nll=sums,
            window_scored=scored,
            check=CheckStats.merge(checks),
        )

    def _nll(self, batches: list[np.ndarray]) -> Iterable[np.ndarray]:
        """Each batch's NLL, in order: one nll_many call (pipeline), or lazily one nll call per
        batch, so that without the pipeline each batch is summed and checked before the next runs."""
        if self.pipeline:
            return self.backend.nll_many(batches)
        return (self.backend.nll(b) for b in batches)

    def _check(self, input_ids: np.ndarray, nll: np.ndarray, mask: np.ndarray) -> CheckStats:
        expected = self.reference.nll(input_ids).astype(np.float64)[mask]
        error = np.abs(nll[mask] - expected)
        rel = error / np.maximum(np.abs(expected), 1e-12)
        return CheckStats(1, int(mask.sum()), float(error.max(initial=0.0)), float(rel.max(initial=0.0)))

    def close(self) -> None:
        self.backend.close()
        if self.reference is not None:
            self.reference.close()
