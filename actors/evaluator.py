"""What one device does with one block of windows: per-window NLL sums (docs/design.md, "Blocks and block results").

A plain class, so tests build it directly; the driver makes it remote in one place. Column j
of `nll` is the NLL of token j + 1, so a window's scored columns are
score_from − 1 ≤ j < n_valid − 1 (positions score_from ≤ t < n_valid).

With `pipeline` (the default) a block's batches go to the backend in one `nll_many` call, so a
device with a queue runs them back to back; without it (`--no-pipeline`), one `nll` call per
batch. The sums are the same bits either way: the same arrays are masked and summed per batch.

Given a `DeviceThread`, every backend call goes through it, and `evaluate` may be called from
several threads at once (a device actor takes two calls): each call's host work then overlaps
the device's run of the other's batches, and the device time of a block is measured on the
device thread, around its own calls only.

Given a `CallMarker`, a call that ends the process on error (a backend whose `aborts_on_error`
is true: ais_bench's infer_pipeline) is noted on disk while it runs, so that the actor Ray
restarts can tell the driver which block its process died in (actors/node_files.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from npueval.core.errors import UserError, root_cause

from .backend import Backend
from .device_thread import DeviceThread
from .node_files import CallInProgress, CallMarker


@dataclass(frozen=True)
class BlockRows:
    """A block's windows as a device actor gets them (eval/driver/blocks.py reads them)."""

    input_ids: np.ndarray  # (n, L) int32
    score_from: np.ndarray  # (n,) int16
    n_valid: np.ndarray  # (n,) int16
    window_ids: np.ndarray  # (n,) int64


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
    device_wait_s: float = 0.0  # in wall_s, waiting for the device to finish another block first
    device_start: float = 0.0  # when the device began this block's first call, and ended its last
    device_end: float = 0.0  # (time.time() of the actor's host; 0.0: not known)

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


@dataclass
class _DeviceClock:
    """One block's device time, its time waiting for the device thread to be free, and when its
    first call began and its last ended on the device thread (wall clock, for the timeline)."""

    run_s: float = 0.0
    wait_s: float = 0.0
    first_start: float = 0.0
    last_end: float = 0.0


class Evaluator:
    """`reference` (optional) is the host ONNX model of `--check-against`: the first
    `check_batches` batches this evaluator runs also go through it, and the per-token NLL of
    both are compared over the scored positions. `pipeline`: a block's batches in one
    `nll_many` call; `device_thread`: where the backend is called (see the module docstring)."""

    def __init__(self, backend: Backend, node_id: str = "local", device: str = "0",
                 reference: Backend | None = None, check_batches: int = 0, pipeline: bool = True,
                 device_thread: DeviceThread | None = None, marker: CallMarker | None = None):
        self.backend, self.node_id, self.device = backend, node_id, device
        self.reference, self._check_left = reference, check_batches if reference is not None else 0
        self.pipeline, self.device_thread = pipeline, device_thread
        self.marker = marker if getattr(backend, "aborts_on_error", False) else None
        self._check_lock = threading.Lock()

    def evaluate(self, block_id: int, input_ids: np.ndarray, score_from: np.ndarray, n_valid: np.ndarray,
                 window_ids: np.ndarray) -> BlockResult:
        start, clock = time.perf_counter(), _DeviceClock()
        batch = self.backend.batch_size
        mask = scored_mask(score_from.astype(np.int64), n_valid.astype(np.int64), input_ids.shape[1])
        sums = np.empty(input_ids.shape[0], dtype=np.float64)
        starts = range(0, input_ids.shape[0], batch)
        checks = []
        model_batches = [input_ids[lo: lo + batch] for lo in starts]
        # strict: a backend that returned fewer results than batches must not leave sums unset.
        for lo, nll in zip(starts, self._nll(block_id, model_batches, clock), strict=True):
            nll = nll.astype(np.float64)
            sums[lo: lo + batch] = np.where(mask[lo: lo + batch], nll, 0.0).sum(axis=1)
            if self._take_check():
                checks.append(self._check(input_ids[lo: lo + batch], nll, mask[lo: lo + batch]))
        scored = mask.sum(axis=1).astype(np.int64)
        return BlockResult(
            block_id=block_id,
            node_id=self.node_id,
            device=self.device,
            nll_sum=float(sums.sum()),
            scored_tokens=int(scored.sum()),
            windows=int(input_ids.shape[0]),
            batches=len(starts),
            device_s=clock.run_s,
            wall_s=time.perf_counter() - start,
            window_ids=window_ids.astype(np.int64),
            window_nll=sums,
            window_scored=scored,
            check=CheckStats.merge(checks),
            device_wait_s=clock.wait_s,
            device_start=clock.first_start,
            device_end=clock.last_end,
        )

    def _nll(self, block_id: int, batches: list[np.ndarray], clock: _DeviceClock) -> Iterator[np.ndarray]:
        """Each batch's NLL, in order: one nll_many call (pipeline), or lazily one nll call per
        batch, so that without the pipeline each batch is summed and checked before the next runs."""
        if self.pipeline:
            yield from self._on_device(self._marked(block_id, self.backend.nll_many), batches, clock)
        else:
            for b in batches:
                yield self._on_device(self.backend.nll, b, clock)

    def _marked(self, block_id: int, call: Callable) -> Callable:
        """`call`, noted on disk while it runs where an error in it would end the process."""
        if self.marker is None:
            return call
        marker, note = self.marker, CallInProgress(block_id, "ais_bench infer_pipeline", self.device)

        def marked(arg):
            marker.mark(note)
            out = call(arg)  # an exception here is the backend's own: the process lives on
            marker.clear()
            return out

        return marked

    def _on_device(self, call: Callable, arg, clock: _DeviceClock):
        """call(arg) on the device thread. Its device time is measured there, around this call
        only, since another block's calls may run between two of this block's."""
        handed_in = time.perf_counter()

        def timed():
            clock.wait_s += time.perf_counter() - handed_in
            clock.first_start = clock.first_start or time.time()
            before = self.backend.device_seconds()
            out = call(arg)
            clock.run_s += self.backend.device_seconds() - before
            clock.last_end = time.time()
            return out

        return timed() if self.device_thread is None else self.device_thread.run(timed)

    def _take_check(self) -> bool:
        """Whether this batch is one of the first check_batches (counted across threads)."""
        with self._check_lock:
            if self._check_left <= 0:
                return False
            self._check_left -= 1
            return True

    def _check(self, input_ids: np.ndarray, nll: np.ndarray, mask: np.ndarray) -> CheckStats:
        # In the reference's own batches: a torch backend's batch need not be the ONNX model's.
        step = self.reference.batch_size
        try:
            expected = np.concatenate([self.reference.nll(input_ids[lo: lo + step])
                                       for lo in range(0, input_ids.shape[0], step)]).astype(np.float64)[mask]
        except Exception as exc:
            # The user's reference does not fit the data: sent again, the block would be done on a
            # device that checks no more, and the check asked for would silently not happen.
            raise UserError(f"--check-against: the reference model cannot run this data's batches "
                            f"({root_cause(exc)}); give the ONNX of the model being evaluated") from None
        error = np.abs(nll[mask] - expected)
        rel = error / np.maximum(np.abs(expected), 1e-12)
        return CheckStats(1, int(mask.sum()), float(error.max(initial=0.0)), float(rel.max(initial=0.0)))

    def close(self) -> None:
        if self.device_thread is None:
            self.backend.close()
        else:
            self.device_thread.run(self.backend.close)
            self.device_thread.stop()
        if self.reference is not None:
            self.reference.close()
