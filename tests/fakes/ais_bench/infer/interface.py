"""A fake `ais_bench.infer.interface`: both generations of the real one, and aclruntime beneath them.

Read from the real sources (Ascend/tools, ais-bench_workload/tool/ais_bench): the pre-2024
`interface.py` (GitHub mirror 9d6da90) and the one since 2024-02 (upstream 8da7f645, with
`interface_check.py`, `common/path_security_check.py`, and the C++ of `pipeline.cpp`,
`PyInferenceSession.cpp`, `ModelInferenceProcessor.cpp`, `DeviceManager.cpp`).

**Which generation.** `InferSession` is the pre-2024 class when FAKE_AIS_BENCH_OLD=1 at the time
it is imported (both print version 0.0.2, so only their methods tell them apart):
- old: `__init__`, `get_inputs`, `get_outputs`, `run`, `infer`, `sumary()` (exec_time_list of
  float durations), `reset_sumaryinfo()`, and an instance `finalize()`; no argument checks, a
  numpy feed's bytes are read from its data pointer whether it is contiguous or not;
- new: `infer`, `infer_pipeline`, `summary()` ((start, end) pairs in ms since the session
  began), `reset_summaryinfo()`, `free_resource()`, a static `finalize()`, and the checks of
  `interface_check.py`: the model path (characters outside [_A-Za-z0-9/.-], a link, not owned
  by this user or one of its groups, group- or other-writable, not .om, over 10 GB: ValueError),
  the device id (TypeError unless a Python int, ValueError outside 0..255), loop (1..100000),
  lists of feeds (ValueError: not a list, empty, over 512 for the pipeline).

**What aclruntime does underneath**, in both:
- the device: ACL counts the chips that ASCEND_RT_VISIBLE_DEVICES lets it see (FAKE_ACL_DEVICE_COUNT
  chips on this host, default 4; the list read up to its first bad entry) and opening an id past
  them fails (stdout "[ERROR] acl open device N failed", RuntimeError "[107001][Error code
  unknown] "); FAKE_AIS_BENCH_RECORD names a file that gets one JSON line per session opened
  (pid, device id, the logic id it is, the list it saw);
- an execution checks the feeds' count and byte sizes, runs, and appends its time to the list
  (fp32 values, as the C++ stores them); a failure prints its reason on stdout and raises
  RuntimeError("[-1][ACL: general failure] "), which is all Python sees;
- inside `infer_pipeline` the executions run in a C++ thread, where an error is not caught: the
  process prints "terminate called after throwing an instance of 'std::runtime_error'" and aborts;
- the GIL is never released: an execution holds it for FAKE_AIS_BENCH_DEVICE_MS (default 0) in a
  C call (libc nanosleep through ctypes.PyDLL, which keeps the GIL, and uses no CPU, as a wait on
  the device does). A pure-Python loop would not do: the interpreter hands the GIL over every
  5 ms there. The fake's own onnxruntime run releases the GIL; it is host work of the fake, not
  the device time it stands for.

**What it computes**: the ONNX model that the fake `atc` copied into the .om, with onnxruntime; or,
with FAKE_AIS_BENCH_COMPUTE=simulated, the simulated backend's documented NLL for a loss-head model
of shape FAKE_AIS_BENCH_SHAPE ("B,L"; the .om's bytes are not read), for scale benchmarks.

Knobs for tests: FAKE_AIS_BENCH_FP16=1 rounds float outputs to float16, as a chip computing in
fp16 would; FAKE_AIS_BENCH_FAIL_ON_ID=N makes every execution whose input_ids hold id N fail, as
an input that trips an AI Core error does.

Every FAKE_* knob is read from the environment, or from the JSON object in the file that
FAKE_AIS_BENCH_KNOBS names, which wins: Ray's workers keep the environment Ray started with, so
tests that share one Ray change the file between runs. Knobs are read when a session is made
(and the generation when InferSession is imported), so an actor Ray restarts reads them again.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import stat
import sys
import time
from types import SimpleNamespace

import aclruntime  # noqa: F401 - as the real interface does: ais_bench needs its C++ half
import numpy as np

OM_MODEL_MAX_SIZE = 10 * 1024**3
PIPELINE_API_SAMPLE_COUNT_MAX = 512
MODEL_INPUT_TENSOR_COUNT_MAX = 1024
LOOP_MAX_SIZE = 100000
PATH_WHITE_LIST_REGEX = re.compile(r"[^_A-Za-z0-9/.-]")
_MODES = ("static", "dymbatch", "dymhw", "dymdims", "dymshape")
_DTYPES = {"tensor(int64)": ("int64", np.int64), "tensor(int32)": ("int32", np.int32),
           "tensor(float)": ("float32", np.float32), "tensor(float16)": ("float16", np.float16)}
ACL_FAILURE = "[-1][ACL: general failure] "
_libc = ctypes.PyDLL(None)  # PyDLL: the GIL stays held through the call


class _ExecuteError(Exception):
    """An execution that failed in C++: its reason went to stdout, Python sees ACL_FAILURE."""


def _knob(name: str, default: str | None = None) -> str | None:
    path = os.environ.get("FAKE_AIS_BENCH_KNOBS")
    if path and os.path.exists(path):
        with open(path) as f:
            knobs = json.load(f)
        if name in knobs:
            return knobs[name]
    return os.environ.get(name, default)


def _error_log(message: str) -> None:
    print(f"[ERROR] {message}", flush=True)


def _hold_gil(seconds: float) -> None:
    """Block this thread for `seconds` in C without releasing the GIL."""
    if seconds > 0:
        ts = (ctypes.c_long * 2)(int(seconds), int((seconds % 1) * 1e9))
        _libc.nanosleep(ts, None)


def _visible_chips() -> list[int]:
    chips = list(range(int(os.environ.get("FAKE_ACL_DEVICE_COUNT", "4"))))
    value = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
    if value is None:
        return chips
    seen = []
    for entry in value.split(","):
        if not (entry.isdigit() and int(entry) in chips):
            break  # ACL stops at the first entry that is not a valid id
        seen.append(int(entry))
    return seen


class _Chip:
    """aclruntime's InferenceSession: the device, the model, the executions and their times."""

    def __init__(self, model_path: str, device_id: int, loop: int, durations: bool):
        visible = _visible_chips()
        if not os.path.isfile(model_path):
            _error_log(f"model file {model_path} read failed")
            raise RuntimeError(ACL_FAILURE)
        if device_id >= len(visible):
            print(f"[ACL ERROR] EE1001: The argument is invalid.Reason: Set visible device failed, invalid "
                  f"device={device_id}",
                  flush=True)
            _error_log(f"acl open device {device_id} failed")
            raise RuntimeError("[107001][Error code unknown] ")
        record = _knob("FAKE_AIS_BENCH_RECORD")
        if record:
            with open(record, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "device_id": device_id, "logic_id": visible[device_id],
                                    "visible": os.environ.get("ASCEND_RT_VISIBLE_DEVICES")}) + "\n")
        self.loop, self.durations = loop, durations
        self.device_s = float(_knob("FAKE_AIS_BENCH_DEVICE_MS", "0")) / 1000
        self.fp16 = bool(_knob("FAKE_AIS_BENCH_FP16"))
        poison = _knob("FAKE_AIS_BENCH_FAIL_ON_ID")
        self.poison = None if poison is None else int(poison)
        if _knob("FAKE_AIS_BENCH_COMPUTE") == "simulated":
            b, length = (int(n) for n in _knob("FAKE_AIS_BENCH_SHAPE").split(","))
            self._ort = None
            self.inputs = [_desc(name, "int64", [b, length]) for name in ("input_ids", "targets")]
            self.outputs = [_desc("nll", "float32", [b, length])]
        else:
            import onnxruntime as ort

            self._ort = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
            self.inputs = [_desc(a.name, *_DTYPES[a.type][:1], list(a.shape)) for a in self._ort.get_inputs()]
            self.outputs = [_desc(a.name, *_DTYPES[a.type][:1], list(a.shape)) for a in self._ort.get_outputs()]
        self.zero = time.perf_counter()
        self.exec_time_list: list = []
        self.freed = False

    def execute(self, buffers: list[bytes]) -> list[np.ndarray]:
        """One inference of `loop` executions on the feeds' raw bytes; _ExecuteError on failure."""
        if self.freed:
            _error_log("model resource was freed")
            raise _ExecuteError
        if len(buffers) != len(self.inputs):
            _error_log(f"intensors in:{len(buffers)} need:{len(self.inputs)} not match")
            raise _ExecuteError
        arrays = {}
        for i, (data, desc) in enumerate(zip(buffers, self.inputs)):
            if len(data) != desc.realsize:
                _error_log(f"check i:{i} name:{desc.name} in size:{len(data)} needsize:{desc.realsize} not match")
                raise _ExecuteError
            arrays[desc.name] = np.frombuffer(data, dtype=desc.datatype).reshape(desc.shape)
        ids = arrays.get("input_ids")
        for _ in range(self.loop):
            start = time.perf_counter()
            if self.poison is not None and ids is not None and (ids == self.poison).any():
                _error_log("acl execute failed:507011")
                raise _ExecuteError
            outputs = self._compute(arrays)
            _hold_gil(self.device_s)
            end = time.perf_counter()
            start_ms, end_ms = (np.float32(1000 * (t - self.zero)) for t in (start, end))
            self.exec_time_list.append(float(end_ms - start_ms) if self.durations else (float(start_ms), float(end_ms)))
        if self.fp16:
            outputs = [o.astype(np.float16).astype(o.dtype) if o.dtype.kind == "f" else o for o in outputs]
        return outputs

    def _compute(self, arrays: dict) -> list[np.ndarray]:
        if self._ort is not None:
            return self._ort.run(None, arrays)
        x, targets = arrays["input_ids"], arrays["targets"]
        j = np.arange(x.shape[1], dtype=np.int64)
        return [(1 + ((x * 7919 + targets * 104729 + j) % 9973) / 9973).astype(np.float32)]


def _desc(name: str, datatype: str, shape: list[int]):
    size = int(np.prod(shape)) * np.dtype(datatype).itemsize
    return SimpleNamespace(name=name, datatype=datatype, format=0, shape=shape, size=size, realsize=size)


def _raw_bytes(array: np.ndarray) -> bytes:
    """What aclruntime.BaseTensor(array.__array_interface__['data'][0], array.nbytes) reads."""
    return ctypes.string_at(array.__array_interface__["data"][0], array.nbytes)


def _as_array(feed) -> np.ndarray:
    if isinstance(feed, np.ndarray):
        return feed
    if type(feed) in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.float16,
                      np.float32, np.float64):
        return np.array(feed)
    raise RuntimeError(f"type:{type(feed)} invalid")


class OldInferSession:
    """The pre-2024 surface: no checks, no pipeline, `sumary()`, `reset_sumaryinfo()`, `finalize()`."""

    def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None, debug: bool = False,
                 loop: int = 1):
        self.device_id, self.model_path, self.loop = device_id, model_path, loop
        self.session = _Chip(model_path, int(device_id), loop, durations=True)
        self.outputs_names = [d.name for d in self.session.outputs]

    def get_inputs(self):
        self.intensors_desc = self.session.inputs
        return self.intensors_desc

    def get_outputs(self):
        self.outtensors_desc = self.session.outputs
        return self.outtensors_desc

    def run(self, feeds, out_array=False):
        buffers = [_raw_bytes(a) for a in feeds]  # the data pointer and nbytes, contiguous or not
        try:
            return self.session.execute(buffers)
        except _ExecuteError:
            raise RuntimeError(ACL_FAILURE) from None

    def infer(self, feeds, mode="static", custom_sizes=100000):
        return self.run([_as_array(f) for f in feeds], out_array=True)

    def reset_sumaryinfo(self):
        self.session.exec_time_list.clear()

    def sumary(self):
        return SimpleNamespace(exec_time_list=list(self.session.exec_time_list))

    def finalize(self):
        self.session.freed = True


class NewInferSession:
    """The surface since 2024-02: checks, `infer_pipeline`, `summary()`, `free_resource()`."""

    def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None, debug: bool = False,
                 loop: int = 1):
        _check_model_path(model_path)
        if not isinstance(device_id, int):
            raise TypeError(f"device:{device_id} is not a integer!")
        if not 0 <= device_id <= 255:
            raise ValueError(f"device:{device_id} is illegal. legal value range is [0, 255]")
        if not isinstance(loop, int):
            raise TypeError(f"value:{loop} is not a integer!")
        if not 0 < loop <= LOOP_MAX_SIZE:
            raise ValueError(f"input value:{loop} is out of range. Please check.")
        self.device_id, self.model_path, self.loop = device_id, model_path, loop
        self.session = _Chip(model_path, device_id, loop, durations=False)
        self.outputs_names = [d.name for d in self.session.outputs]
        self.intensors_desc, self.outtensors_desc = self.session.inputs, self.session.outputs

    @staticmethod
    def finalize():
        pass  # ends every ACL resource of the process; nothing to do in the fake

    def get_inputs(self):
        return self.session.inputs

    def get_outputs(self):
        return self.session.outputs

    def infer(self, feeds, mode="static", custom_sizes=100000, out_array=True):
        _check_list(feeds, MODEL_INPUT_TENSOR_COUNT_MAX)
        arrays = [np.ascontiguousarray(_as_array(f)) for f in feeds]
        if mode not in _MODES:
            raise RuntimeError(f"wrong infer_mode:{mode}, only support \"static\",\"dymbatch\",\"dymhw\", "
                               "\"dymdims\",\"dymshape\"")
        try:
            return self.session.execute([a.tobytes() for a in arrays])
        except _ExecuteError:
            raise RuntimeError(ACL_FAILURE) from None

    def infer_pipeline(self, feeds_list, mode="static", custom_sizes=100000):
        _check_list(feeds_list, PIPELINE_API_SAMPLE_COUNT_MAX)
        inputs_list = []
        for feeds in feeds_list:
            _check_list(feeds, MODEL_INPUT_TENSOR_COUNT_MAX)
            inputs_list.append([_raw_bytes(np.ascontiguousarray(_as_array(f))) for f in feeds])
        if mode not in _MODES:
            raise RuntimeError(f"wrong infer_mode:{mode}, only support \"static\",\"dymbatch\",\"dymhw\", "
                               "\"dymdims\",\"dymshape\"")
        outputs = []
        for buffers in inputs_list:  # the compute thread: an exception there is not caught
            try:
                outputs.append(self.session.execute(buffers))
            except _ExecuteError:
                sys.stdout.flush()
                sys.stderr.write("terminate called after throwing an instance of 'std::runtime_error'\n"
                                 f"  what():  {ACL_FAILURE}\n")
                sys.stderr.flush()
                os.abort()
        return outputs

    def reset_summaryinfo(self):
        self.session.exec_time_list.clear()

    def summary(self):
        return SimpleNamespace(exec_time_list=list(self.session.exec_time_list))

    def free_resource(self):
        self.session.freed = True


def _check_list(value, max_len: int) -> None:
    if not isinstance(value, list):
        raise ValueError("the list be checked is not a list!")
    if not value:
        raise ValueError("the list is empty")
    if len(value) > max_len:
        raise ValueError(f"the list's length is over {max_len}!")


def _check_model_path(path: str) -> None:
    """interface_check.check_model_path_legality, as path_security_check.py does it on Linux."""
    if not path:
        raise RuntimeError("empty model path!")
    absolute = os.path.abspath(path)
    if PATH_WHITE_LIST_REGEX.search(absolute):
        _error_log("path contains illegal char, legal chars include A-Z a-z 0-9 _ - / .")
        raise ValueError("The path string is illegal. Please check.")
    if not os.path.isfile(absolute):
        raise ValueError(f"The path:{path} is not a file.")
    st = os.stat(absolute)
    problem = None
    if os.path.islink(absolute):
        problem = f"path :{absolute} is a soft link, not supported, please import file(or directory) directly"
    elif st.st_uid != os.geteuid() and st.st_gid not in os.getgroups():
        problem = f"current user isn't path:{absolute}'s owner or ownergroup"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = (f"The file {absolute} is group writable, or is others writable, as import file(or directory), "
                   "permission should not be over 0o755(rwxr-xr-x)")
    if problem:
        _error_log(problem)
        raise ValueError(f"The path:{path} is illegal. Please check the error log for more detail.")
    if os.path.splitext(absolute)[1] != ".om":
        raise ValueError(f"The suffix of path:{path} not in ['om']. Please check.")
    if st.st_size > OM_MODEL_MAX_SIZE:
        raise ValueError(f"The file:{path} size is larger than {OM_MODEL_MAX_SIZE}. Please check.")


def __getattr__(name: str):
    if name == "InferSession":
        return OldInferSession if _knob("FAKE_AIS_BENCH_OLD") else NewInferSession
    raise AttributeError(name)
