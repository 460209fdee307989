"""The om backend: a compiled .om on an Ascend NPU through ais_bench (ascend.md §1).

Made in an actor that holds {"NPU": 1}: Ray makes that chip the only visible one, so the
device is index 0. ais_bench is a vendor wheel (README, "NPU hosts"), imported here only.
Both formats of `exec_time_list` are read: (start_ms, end_ms) pairs from `summary()` since
2024, float durations from the older `sumary()`; the version number did not change.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from npueval.build.loss_head import targets_for
from npueval.eval.errors import UserError

from .backend import check_batch, pad_rows
from .onnx_backend import nll_from_logits


def _durations_ms(exec_time_list) -> list[float]:
    return [e[1] - e[0] if isinstance(e, (tuple, list)) else float(e) for e in exec_time_list]


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
        self._closed = False

    def nll(self, input_ids: np.ndarray) -> np.ndarray:
        x = check_batch(input_ids, self.batch_size, self.seq_len)
        padded = np.ascontiguousarray(pad_rows(x, self.batch_size), dtype=np.int64)
        feeds = [padded, targets_for(padded)] if self.loss_head else [padded]
        (out,) = self._session.infer(feeds)[:1]
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
