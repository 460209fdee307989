"""A fake `ais_bench.infer.interface` that obeys the real API as ascend.md §1 documents it.

It refuses what the real one refuses: a model path that is missing, not a file, a link, not
owned by this user or group, group- or other-writable, not `.om`, or over 10 GB; a device id
that is not a Python int (TypeError) or outside 0..255 (ValueError); feeds that are not a
non-empty list, of the wrong count, or of the wrong byte size per input (RuntimeError).
`infer_pipeline` also refuses a feeds list that is not a non-empty list, holds more than 512
feeds, or (static mode) feeds of different shapes (RuntimeError), and checks each feed as `infer`
does. Underneath it runs the ONNX model that the fake `atc` copied into the .om with onnxruntime.

Knobs for tests: FAKE_AIS_BENCH_OLD=1 gives the pre-2024 package (`sumary()` with float
durations, no `summary()`); FAKE_AIS_BENCH_FP16=1 rounds float outputs to float16, as a chip
computing in fp16 would. Both apply to `infer_pipeline` as to `infer`.
"""

from __future__ import annotations

import os
import stat
import time
from types import SimpleNamespace

import numpy as np

OM_MODEL_MAX_SIZE = 10 * 1024**3
PIPELINE_MAX_FEEDS = 512
_MODES = ("static", "dymbatch", "dymhw", "dymdims", "dymshape")
_DTYPES = {"tensor(int64)": ("int64", np.int64), "tensor(int32)": ("int32", np.int32),
           "tensor(float)": ("float32", np.float32), "tensor(float16)": ("float16", np.float16)}


def _check_model_path(path: str) -> None:
    if not os.path.exists(path) or not os.path.isfile(path):
        raise ValueError(f"model path {path} is not a file")
    if os.path.islink(path):
        raise ValueError(f"model path {path} is a soft link")
    st = os.stat(path)
    if st.st_uid != os.getuid() and st.st_gid != os.getgid():
        raise PermissionError(f"model path {path} is not owned by the current user or group")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"model path {path} permission should not be over 0o755")
    if not path.endswith(".om"):
        raise ValueError(f"model path {path} suffix is not om")
    if st.st_size > OM_MODEL_MAX_SIZE:
        raise ValueError(f"model path {path} is larger than 10 GB")


class _Summary:
    def __init__(self, times):
        self.exec_time_list = times


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str = None, debug: bool = False, loop: int = 1):
        _check_model_path(model_path)
        if not isinstance(device_id, int):
            raise TypeError(f"device id {device_id!r} must be an int")
        if not 0 <= device_id <= 255:
            raise ValueError(f"device id {device_id} out of range 0..255")
        if not isinstance(loop, int) or not 1 <= loop <= 100000:
            raise ValueError(f"loop {loop} out of range 1..100000")
        import onnxruntime as ort

        self.device_id, self.loop = device_id, loop
        self._session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        self._zero = time.perf_counter()
        self._times: list = []
        self._freed = False
        self.intensors_desc = [self._desc(i) for i in self._session.get_inputs()]
        self.outtensors_desc = [self._desc(o) for o in self._session.get_outputs()]
        if os.environ.get("FAKE_AIS_BENCH_OLD"):
            self.sumary = lambda: _Summary([e - s for s, e in self._times])
        else:
            self.summary = lambda: _Summary(list(self._times))

    @staticmethod
    def _desc(arg):
        name, dtype = _DTYPES[arg.type]
        size = int(np.prod(arg.shape)) * np.dtype(dtype).itemsize
        return SimpleNamespace(name=arg.name, datatype=name, format=0, shape=list(arg.shape), size=size, realsize=size)

    def get_inputs(self):
        return self.intensors_desc

    def get_outputs(self):
        return self.outtensors_desc

    def infer(self, feeds, mode="static", custom_sizes=100000, out_array=True):
        self._check_call(mode)
        return self._run(self._inputs(feeds))

    def infer_pipeline(self, feeds_list, mode="static", custom_sizes=100000):
        """Every feed's outputs, in order. The real one overlaps transfers and compute in threads;
        here the feeds run one after the other, each timed as `infer` times its call (`loop`
        entries per feed: ascend.md does not say whether the pipeline repeats `loop`, and npueval
        runs at loop 1, where either reading gives one entry per feed)."""
        self._check_call(mode)
        if not isinstance(feeds_list, list) or not feeds_list:
            raise RuntimeError("feeds_list must be a non-empty list")
        if len(feeds_list) > PIPELINE_MAX_FEEDS:
            raise RuntimeError(f"feeds_list size {len(feeds_list)} is over the limit {PIPELINE_MAX_FEEDS}")
        if not all(isinstance(feeds, list) and feeds for feeds in feeds_list):
            raise RuntimeError("each feeds of feeds_list must be a non-empty list")
        if mode in ("static", "dymbatch", "dymhw"):
            shapes = {tuple(np.shape(feed) for feed in feeds) for feeds in feeds_list}
            if len(shapes) > 1:
                raise RuntimeError(f"infer_pipeline mode {mode}: all feeds must have the same shape, "
                                   f"not {sorted(shapes)}")
        checked = [self._inputs(feeds) for feeds in feeds_list]  # all refused before any runs
        return [self._run(inputs) for inputs in checked]

    def _check_call(self, mode) -> None:
        if self._freed:
            raise RuntimeError("session resources were freed")
        if mode not in _MODES:
            raise RuntimeError(f"wrong infer_mode:{mode}")

    def _inputs(self, feeds) -> dict:
        """One call's feeds as the model's inputs, refused as the C++ side refuses them."""
        if not isinstance(feeds, list) or not feeds:
            raise RuntimeError("feeds must be a non-empty list")
        if len(feeds) != len(self.intensors_desc):
            raise RuntimeError(f"feeds size {len(feeds)} not equal to model tensor desc size {len(self.intensors_desc)}")
        inputs = {}
        for i, (feed, desc) in enumerate(zip(feeds, self.intensors_desc)):
            array = np.ascontiguousarray(feed)
            if array.nbytes != desc.size:
                raise RuntimeError(f"check i:{i} name:{desc.name} in size:{array.nbytes} needsize:{desc.size} not match")
            # Like the device, the bytes are read as the model's type, whatever numpy says they are.
            inputs[desc.name] = np.frombuffer(array.tobytes(), dtype=desc.datatype).reshape(desc.shape)
        return inputs

    def _run(self, inputs: dict) -> list:
        """One execution, `loop` times, each appended to the exec time list."""
        for _ in range(self.loop):
            start = (time.perf_counter() - self._zero) * 1000
            outputs = self._session.run(None, inputs)
            self._times.append((start, (time.perf_counter() - self._zero) * 1000))
        if os.environ.get("FAKE_AIS_BENCH_FP16"):
            outputs = [o.astype(np.float16).astype(o.dtype) if o.dtype.kind == "f" else o for o in outputs]
        return outputs

    def reset_summaryinfo(self):
        self._times.clear()

    def free_resource(self):
        self._freed = True
        self._session = None

    @staticmethod
    def finalize():
        pass
