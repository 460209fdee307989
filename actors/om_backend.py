"""The om backend: a compiled .om on an Ascend NPU through ais_bench (ascend.md §1).

Made in an actor that holds {"NPU": 1}: Ray makes that chip the only visible one, so the
device is index 0. ais_bench is a vendor wheel (README, "NPU hosts"), imported here only.
Both formats of `exec_time_list` are read: (start_ms, end_ms) pairs from `summary()` since
2024, float durations from the older `sumary()`; the version number did not change.

`nll` is one `infer` call per model batch (a synchronous device: it idles while the host wakes
up between calls). `nll_many` hands a block's batches to `infer_pipeline`, which runs compute and
transfers in separate threads, back to back: at most PIPELINE_MAX_FEEDS feeds per call, all of
the static batch's shape (a short batch is padded as `nll` pads it), and, for a model without
the loss head, few enough that one call's outputs fit in PIPELINE_OUTPUT_BYTES. Its device time
is read from the same `exec_time_list`, one entry per feed **[inference: ascend.md documents
an entry per execution; not yet verified on hardware]**. `--no-pipeline` goes back to `nll`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npueval.build.loss_head import targets_for
from npueval.eval.errors import UserError

from .backend import check_batch, pad_rows
from .onnx_backend import nll_from_logits


#: Feeds one infer_pipeline call takes at most (ascend.md §1.2).
PIPELINE_MAX_FEEDS = 512
#: Host bytes of the outputs one infer_pipeline call may return. The call hands back every
#: feed's outputs at once: 512 feeds of a loss-head model are 8 MB of NLL, but a logits model's
#: output is (B, L, V) float32, 346 MB at B = 8, L = 512, V = 21128, so 512 of them would be
#: 177 GB. Under this budget a logits model goes one batch per call.
PIPELINE_OUTPUT_BYTES = 256 * 1024**2
#: Bytes per element of aclruntime's dtype names (ascend.md §1.2).
_ITEMSIZE = {"int8": 1, "uint8": 1, "bool": 1, "int16": 2, "uint16": 2, "float16": 2, "int32": 4, "uint32": 4,
             "float32": 4, "int64": 8, "uint64": 8, "double": 8}


def _durations_ms(exec_time_list) -> list[float]:
    return [e[1] - e[0] if isinstance(e, (tuple, list)) else float(e) for e in exec_time_list]


def output_bytes(descs) -> int:
    """Host bytes of one call's outputs, from the model's output description: shape × item size,
    or the description's `size` where the shape is dynamic or the type unknown."""
    total = 0
    for desc in descs:
        # aclruntime's datatype is an enum (str: "dtype.float32"); the fake's, a plain name.
        itemsize = _ITEMSIZE.get(str(desc.datatype).rsplit(".", 1)[-1])
        shape = [int(n) for n in desc.shape]
        if itemsize is None or any(n < 0 for n in shape):
            total += int(desc.size)
        else:
            total += math.prod(shape) * itemsize
    return total


def pipeline_feeds(descs, budget: int = PIPELINE_OUTPUT_BYTES) -> int:
    """Feeds per infer_pipeline call: at most PIPELINE_MAX_FEEDS, and outputs within `budget` (at least one)."""
    return max(1, min(PIPELINE_MAX_FEEDS, budget // max(1, output_bytes(descs))))


class OmBackend:
    def __init__(self, om_path: str | Path, device_id: int = 0):
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError:
            raise UserError(
                "the om backend needs ais_bench and aclruntime, the vendor wheels: see the README, "
                "\"NPU hosts: ais_bench and aclruntime\""
            ) from None
        path = Path(om_path)
        if not path.is_file():
            raise UserError(f"--model {path}: no such file")
        if os.stat(path).st_mode & 0o022:
            raise UserError(f"--model {path}: group- or other-writable, which ais_bench refuses; chmod 644 it")
        self._session = InferSession(int(device_id), str(path))  # a Python int: ais_bench refuses numpy's
        inputs = self._session.get_inputs()
        self.loss_head = len(inputs) == 2
        self.batch_size, self.seq_len = inputs[0].shape
        self.pipeline_feeds = pipeline_feeds(self._session.get_outputs())
        self._closed = False

    def nll(self, input_ids: np.ndarray) -> np.ndarray:
        x = check_batch(input_ids, self.batch_size, self.seq_len)
        (out,) = self._session.infer(self._feeds(x))[:1]
        return self._nll(x, out)

    def nll_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        checked = [check_batch(b, self.batch_size, self.seq_len) for b in batches]  # all, before any device work
        results = []
        for lo in range(0, len(checked), self.pipeline_feeds):
            chunk = checked[lo: lo + self.pipeline_feeds]
            outputs = self._session.infer_pipeline([self._feeds(x) for x in chunk])
            if len(outputs) != len(chunk):  # never pair a batch with another's outputs, or with none
                raise RuntimeError(f"ais_bench infer_pipeline returned {len(outputs)} outputs for {len(chunk)} "
                                   "feeds; run with --no-pipeline")
            # Each chunk's outputs become NLL (and are let go) before the next call: a logits
            # model's are hundreds of MB per batch.
            results += [self._nll(x, outs[0]) for x, outs in zip(chunk, outputs)]
        return results

    def _feeds(self, x: np.ndarray) -> list[np.ndarray]:
        """One call's inputs at the static batch: every feed of a pipeline call has the same shape."""
        padded = np.ascontiguousarray(pad_rows(x, self.batch_size), dtype=np.int64)
        return [padded, targets_for(padded)] if self.loss_head else [padded]

    def _nll(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The model's first output for batch `x`, cut back to its real rows, as NLL."""
        if self.loss_head:
            return out[: x.shape[0], :-1].astype(np.float32)
        return nll_from_logits(out[: x.shape[0]], x)

    def device_seconds(self) -> float:
        summary = self._session.summary() if hasattr(self._session, "summary") else self._session.sumary()
        return sum(_durations_ms(summary.exec_time_list)) / 1000

    def close(self) -> None:
        if not self._closed:
            self._session.free_resource()
            self._closed = True
