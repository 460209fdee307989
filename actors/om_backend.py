"""The om backend: a compiled .om on an Ascend NPU through ais_bench (docs/npu-hosts.md).

ais_bench is a vendor wheel (docs/npu-hosts.md, "ais_bench and aclruntime"), imported here only. Two
generations of it are in use, both numbered 0.0.2 (Ascend/tools, ais-bench_workload/tool/ais_bench):
the pre-2024 one (GitHub mirror at 9d6da90, still what the vendor's wheel links serve) has `infer`,
`run`, `sumary()`, `reset_sumaryinfo()` and an instance `finalize()`; the one from 2024-02 on
(upstream 3ffe8a42, read at 8da7f645) has `infer_pipeline`, `summary()`, `reset_summaryinfo()`,
`free_resource()`, and a static `finalize()` that ends every ACL resource of the process. What a
session can do is read from its attributes, never from a version: `api` is "pipeline" where it has
`infer_pipeline`, "infer" where not.

`nll` is one `infer` call per model batch. `nll_many` hands a block's batches to
`infer_pipeline` where there is one: at most PIPELINE_MAX_FEEDS feeds per call, all of the static
batch's shape (a short batch is padded as `nll` pads it), and, for a model without the loss head,
few enough that one call's outputs fit in PIPELINE_OUTPUT_BYTES. Without one it is `nll` on each.

Three facts of the real library shape the rest (upstream source, not yet seen on hardware):
- An error inside `infer_pipeline` is thrown in a C++ thread and ends the process
  (std::terminate), so no Python exception is ever seen: `aborts_on_error` tells the evaluator
  to leave a note before such a call (actors/call_marker.py).
- `exec_time_list` holds one entry per execution for the whole session (float milliseconds:
  (start, end) pairs since 2024, durations before) and every access copies it; `device_seconds`
  reads what is new, resets the list and adds it up in float64, so a call's cost does not grow
  with the run.
- aclruntime holds the GIL for the whole of a call (no gil_scoped_release in its bindings):
  while the device runs, no other thread of the actor runs (BENCHMARKS.md, "The GIL").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npueval.core.errors import RunError, UserError, first_line
from npueval.core.model_io import targets_for

from .backend import check_batch, pad_rows
from .onnx_backend import nll_from_logits

#: Feeds one infer_pipeline call takes at most (ais_bench PIPELINE_API_SAMPLE_COUNT_MAX).
PIPELINE_MAX_FEEDS = 512
#: Host bytes of the outputs one infer_pipeline call may return. The call hands back every
#: feed's outputs at once: 512 feeds of a loss-head model are 8 MB of NLL, but a logits model's
#: output is (B, L, V) float32, 346 MB at B = 8, L = 512, V = 21128, so 512 of them would be
#: 177 GB. Under this budget a logits model goes one batch per call.
PIPELINE_OUTPUT_BYTES = 256 * 1024**2
#: Bytes per element of aclruntime's dtype names.
_ITEMSIZE = {"int8": 1, "uint8": 1, "bool": 1, "int16": 2, "uint16": 2, "float16": 2, "int32": 4, "uint32": 4,
             "float32": 4, "int64": 8, "uint64": 8, "double": 8}
#: ais_bench's API generations, as results.json names them.
PIPELINE, INFER = "pipeline", "infer"


def durations_ms(exec_time_list) -> list[float]:
    """Execute times in ms from either generation's list: (start, end) pairs, or durations."""
    return [e[1] - e[0] if isinstance(e, (tuple, list)) else float(e) for e in exec_time_list]


def api_generation(session_or_class) -> str:
    """"pipeline" for an ais_bench that has infer_pipeline (2024 on), "infer" for one that has not."""
    return PIPELINE if callable(getattr(session_or_class, "infer_pipeline", None)) else INFER


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
    """`device_id`: the ACL device id to open, which depends on what this process sees
    (cluster/visibility.py); `model_path` must be a safe local path (actors/worker.py)."""

    def __init__(self, om_path: str | Path, device_id: int = 0):
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError:
            raise UserError(
                "the om backend needs ais_bench and aclruntime, the vendor wheels: see docs/npu-hosts.md, "
                "\"ais_bench and aclruntime\"; `npueval doctor` checks them"
            ) from None
        path = Path(om_path)
        if not path.is_file():
            raise UserError(f"--model {path}: no such file")
        try:
            session = InferSession(int(device_id), str(path))  # a Python int: ais_bench refuses numpy's
        except Exception as exc:
            raise RunError(f"ais_bench could not load {path} on ACL device id {device_id}: "
                           f"{type(exc).__name__}: {first_line(exc)} (its own log lines are in the worker's log; "
                           "`npueval doctor` checks this host)") from None
        self._session = session
        self.api = api_generation(session)
        self._summary = session.summary if hasattr(session, "summary") else session.sumary
        self._reset = session.reset_summaryinfo if hasattr(session, "reset_summaryinfo") else session.reset_sumaryinfo
        self._reset()  # nothing from before this backend is counted
        inputs = session.get_inputs()
        self.loss_head = len(inputs) == 2
        self.batch_size, self.seq_len = (int(n) for n in inputs[0].shape)
        self.pipeline_feeds = pipeline_feeds(session.get_outputs())
        self._device_s = 0.0
        self._closed = False

    @classmethod
    def open(cls, spec, model_path: Path, npu: str | None) -> OmBackend:
        """In a device actor: the chip Ray assigned, by the ACL device id this process sees it as."""
        from npueval.cluster.visibility import acl_device_id

        return cls(model_path, device_id=0 if npu is None else acl_device_id(npu))

    @property
    def aborts_on_error(self) -> bool:
        """Whether an error in `nll_many` ends the process instead of raising (infer_pipeline)."""
        return self.api == PIPELINE

    def nll(self, input_ids: np.ndarray) -> np.ndarray:
        x = check_batch(input_ids, self.batch_size, self.seq_len)
        (out,) = self._session.infer(self._feeds(x))[:1]
        return self._nll(x, out)

    def nll_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        checked = [check_batch(b, self.batch_size, self.seq_len) for b in batches]  # all, before any device work
        if self.api == INFER:
            return [self.nll(x) for x in checked]
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
        new = durations_ms(self._summary().exec_time_list)  # one copy of what came since the last reset
        self._reset()
        self._device_s += math.fsum(new) / 1000
        return self._device_s

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        free = getattr(self._session, "free_resource", None)
        if free is not None:
            free()  # this session's device memory; the static finalize() would end the whole process's ACL
        else:
            self._session.finalize()  # pre-2024: an instance method that releases this session
        self._session = None
