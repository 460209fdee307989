"""The onnx backend: onnxruntime (CPU here, CUDA where available) runs a built model.

A loss-head model (inputs `input_ids` and `targets`, output `nll` (B, L)) returns the NLL
itself; a logits model (the port's output) has its cross-entropy computed here, in float32,
in chunks, with a stable log-sum-exp. Static shapes: a short batch is padded and only its
real rows come back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npueval.core.errors import UserError, first_line
from npueval.core.model_io import INPUT, NLL, TARGETS, targets_for

from .backend import check_batch, pad_rows

#: Rows of logits turned into NLL at a time: bounds the float32 copy to ~100 MB at V = 21128.
_CE_CHUNK_ROWS = 1024


def nll_from_logits(logits: np.ndarray, input_ids: np.ndarray) -> np.ndarray:
    """(b, L, V) logits, (b, L) ids → (b, L - 1) float32: −log softmax(logits[:, j])[ids[:, j + 1]]."""
    b, length, vocab = logits.shape
    flat = logits[:, :-1].reshape(-1, vocab)
    targets = input_ids[:, 1:].reshape(-1)
    out = np.empty(flat.shape[0], dtype=np.float32)
    for start in range(0, flat.shape[0], _CE_CHUNK_ROWS):
        z = flat[start: start + _CE_CHUNK_ROWS].astype(np.float32)
        peak = z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z - peak).sum(axis=1)) + peak[:, 0]
        out[start: start + _CE_CHUNK_ROWS] = log_norm - z[np.arange(z.shape[0]), targets[start: start + _CE_CHUNK_ROWS]]
    return out.reshape(b, length - 1)


class OnnxBackend:
    def __init__(self, model_path: str | Path, threads: int = 1, providers: list[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("the onnx backend needs onnxruntime: pip install onnxruntime") from None
        path = Path(model_path)
        if not path.is_file():
            raise UserError(f"--model {path}: no such file")
        options = ort.SessionOptions()
        # One actor per device: each gets its share of the cores instead of all of them.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self._session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own types for a file that is not a model
            raise UserError(f"--model {path}: onnxruntime cannot load it ({first_line(exc)})") from None
        inputs = {i.name: i for i in self._session.get_inputs()}
        self.loss_head = TARGETS in inputs
        shape = inputs[INPUT].shape
        if not all(isinstance(d, int) for d in shape):
            raise UserError(f"--model {path}: input_ids has a dynamic shape {shape}; build it at a static batch and "
                            "length")
        self.batch_size, self.seq_len = shape
        self._logits_name = self._session.get_outputs()[0].name
        self.providers = self._session.get_providers()
        self._device_s = 0.0

    @classmethod
    def open(cls, spec, model_path: Path, npu: str | None) -> OnnxBackend:
        return cls(model_path, threads=spec.threads)

    def nll(self, input_ids: np.ndarray) -> np.ndarray:
        x = check_batch(input_ids, self.batch_size, self.seq_len)
        rows = x.shape[0]
        padded = pad_rows(x, self.batch_size)
        start = time.perf_counter()
        if self.loss_head:
            (out,) = self._session.run([NLL], {INPUT: padded, TARGETS: targets_for(padded)})
            self._device_s += time.perf_counter() - start
            return out[:rows, :-1].astype(np.float32, copy=False)
        (logits,) = self._session.run([self._logits_name], {INPUT: padded})
        self._device_s += time.perf_counter() - start
        return nll_from_logits(logits[:rows], x)

    def nll_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        # onnxruntime runs a call synchronously on this thread (CPU here): there is no device
        # queue to keep fed, so handing it the batches together gains nothing over one by one.
        return [self.nll(batch) for batch in batches]

    def device_seconds(self) -> float:
        return self._device_s

    def close(self) -> None:
        self._session = None
