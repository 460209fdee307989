"""The actor of a run: one per device, holding one backend (docs/design.md, "Dispatch: plain actors").

`DeviceWorker` is a plain class, so tests build it directly; `remote_workers` makes it a Ray
actor in one place. The model's bytes come through Ray's object store (no shared disk between
nodes) and are written once per node to a local file of mode 0o644: ais_bench refuses a model
file that is group- or other-writable, or a link.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npueval.core.errors import RunError, UserError

from . import node_files
from .backend import Backend, BackendKind, backend_kind
from .device_thread import DeviceThread
from .evaluator import BlockResult, BlockRows, Evaluator
from .node_files import CallInProgress, CallMarker, ModelFile

log = logging.getLogger(__name__)

#: Calls a device actor runs at once: one on the device, the next one's host work beside it
#: (actors/device_thread.py). The driver keeps as many in flight per actor.
CALLS_AT_ONCE = 2


@dataclass(frozen=True)
class DeviceInfo:
    """What a device actor runs, as `describe` answers: where, the model's shape, and how it
    calls ais_bench ("pipeline": infer_pipeline, "infer": batch by batch, for --no-pipeline or an
    ais_bench without it; None for the other backends)."""

    node: str
    device: str
    batch_size: int
    seq_len: int
    host: str
    pid: int
    ais_bench_api: str | None = None
    previous_death: CallInProgress | None = None  # the call this actor's previous process died in
    # When this process began the actor and had its backend open, on its host's clock (time.time()).
    constructed_at: float | None = None
    opened_at: float | None = None
    open_s: float | None = None  # how long opening the backend took (the model's copy and load)

    @property
    def name(self) -> str:
        """How messages name the device: "npu:3 on node 4f1c2a9b"."""
        return f"{self.device} on node {self.node[:8]}"


@dataclass(frozen=True)
class BenchFigures:
    """One device's pure-inference loop (`bench`): `batches` timed batches, their device and wall time."""

    node: str
    device: str
    batch_size: int
    batches: int
    device_s: float
    wall_s: float


@dataclass(frozen=True)
class WorkerSpec:
    backend: str  # a name in the backend table (actors/backend.py)
    model: ModelFile | None = None  # None for the simulated and torch backends
    checkpoint: str | None = None  # the torch backends: the checkpoint folder, read where it lies
    batch_size: int = 8  # simulated only: the others read it from the model
    seq_len: int = 512  # simulated only
    device_ms: float = 0.0  # simulated only: sleep per model batch
    threads: int = 1  # onnxruntime threads of this actor
    reference: ModelFile | None = None  # --check-against: the host ONNX model
    check_batches: int = 0
    allow_unhealthy: bool = False
    pipeline: bool = True  # a block's batches in one nll_many call; False: one nll call per batch

    def __post_init__(self):
        needed = self.checkpoint if self.kind.model_file == "checkpoint" else self.model
        if self.kind.model_file is not None and needed is None:
            raise UserError(f"--backend {self.backend} needs --model")

    @property
    def kind(self) -> BackendKind:
        return backend_kind(self.backend)


#: A test or an embedding application may build the backend itself (a ledger in tests).
BackendFactory = Callable[[WorkerSpec, "Path | None"], Backend]


def local_model_file(model: ModelFile, objects: dict, safe: bool = False) -> Path:
    """The model's bytes (from `objects`, sha256 → object ref) as a local file of mode 0o644,
    written once per node and checked; `safe`: in a folder whose path ais_bench takes
    (actors/node_files.py)."""
    import ray

    from .node_files import check_model_folder, local_root

    def fetch(file: ModelFile) -> memoryview:
        if file.sha256 not in objects:
            raise RunError(f"model {file.name}: its bytes were not handed to this device (describe(objects))")
        return memoryview(ray.get(objects[file.sha256]))  # uint8s read in place from this node's object store

    root = check_model_folder() if safe else local_root()
    return node_files.local_model_file(model, fetch, root)


def make_backend(spec: WorkerSpec, model_path: Path | None) -> Backend:
    """The spec's backend, opened on the device Ray assigned this actor."""
    return spec.kind.open(spec, model_path, assigned_npu())


def assigned_npu() -> str | None:
    """The NPU id Ray gave this actor (its logic id), or None outside Ray or without one."""
    import ray

    if not ray.is_initialized():  # a plain object (tests); asking Ray would start one
        return None
    ids = ray.get_runtime_context().get_accelerator_ids().get("NPU", [])
    return ids[0] if ids else None


def assigned_gpu() -> str | None:
    """The GPU id Ray gave this actor, or None."""
    import ray

    if not ray.is_initialized():
        return None
    ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    return ids[0] if ids else None


def check_chip_health(logic_id: str, allow_unhealthy: bool) -> None:
    """On a cluster npueval joined, nobody left the sick chips out: refuse to run on one (where
    npu-smi can tell; where it fails, say so and run)."""
    from npueval.cluster.devices import discover_or_warn

    for device in discover_or_warn(f"NPU logic id {logic_id}'s health is not checked") or []:
        if str(device.logic_id) == logic_id and not device.healthy:
            if allow_unhealthy:
                log.warning("NPU logic id %s is %s; running on it anyway (--allow-unhealthy)", logic_id, device.health)
                return
            raise UserError(
                f"NPU logic id {logic_id} (card {device.card} chip {device.chip}) reports health {device.health}: "
                "fix or leave it out of the cluster, or pass --allow-unhealthy"
            )


class DeviceWorker:
    """One device. Its backend opens at the first `describe(objects)` after the actor (re)starts:
    the model's bytes come as object refs in that call, not in the constructor's arguments, because
    Ray cannot be relied on to restart an actor whose creation arguments hold object refs
    (ray-project/ray#53727, which Ray logs as an error for every such actor). An error while
    opening (a bad model, a sick chip) is kept and raised by every call, so the driver gets it as
    it was, once."""

    def __init__(self, spec: WorkerSpec, label: str, factory: BackendFactory | None = None):
        self.constructed_at = time.time()
        self.opened_at = self.open_s = None
        npu = assigned_npu()
        gpu = assigned_gpu()
        self.device = f"npu:{npu}" if npu is not None else f"cuda:{gpu}" if gpu is not None else label
        import ray

        self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        self.spec, self.factory, self.npu = spec, factory, npu
        self.evaluator: Evaluator | None = None
        self._error: Exception | None = None
        # A note left by this actor's previous process if it died inside a call that ends the
        # process on error (ais_bench's infer_pipeline): the driver asks for it (describe).
        self.marker = CallMarker.for_actor(ray.get_runtime_context().get_actor_id()) if ray.is_initialized() else None
        self.previous_death: CallInProgress | None = self.marker.take() if self.marker else None
        _freeze()

    def _open(self, objects: dict) -> Evaluator:
        """The evaluator, its backend opened on the first call; `objects`: sha256 → object ref of
        the spec's model files."""
        if self._error is not None:
            raise self._error
        if self.evaluator is None:
            start = time.perf_counter()
            try:
                self.evaluator = self._evaluator(self.spec, self.npu, self.factory, objects)
            except Exception as exc:
                self._error = exc
                raise
            _freeze()
            self.open_s, self.opened_at = time.perf_counter() - start, time.time()
        return self.evaluator

    def _evaluator(self, spec: WorkerSpec, npu: str | None, factory: BackendFactory | None,
                   objects: dict) -> Evaluator:
        if spec.kind.on_chip and npu is not None:
            check_chip_health(npu, spec.allow_unhealthy)
        model_path = local_model_file(spec.model, objects, safe=spec.kind.on_chip) if spec.model is not None else None
        device_thread = DeviceThread()
        try:
            backend = device_thread.run(factory or make_backend, spec, model_path)
        except BaseException:
            device_thread.stop()
            raise
        reference = None
        if spec.reference is not None:
            from .onnx_backend import OnnxBackend

            reference = OnnxBackend(local_model_file(spec.reference, objects), threads=1,
                                    providers=["CPUExecutionProvider"])
        return Evaluator(backend, self.node_id, self.device, reference, spec.check_batches, spec.pipeline,
                         device_thread, self.marker)

    def _ready(self) -> Evaluator:
        if self._error is not None:
            raise self._error
        if self.evaluator is None:
            raise RunError(f"{self.device}: called before describe() opened its backend")
        return self.evaluator

    def describe(self, objects: dict | None = None) -> DeviceInfo:
        """What this device runs; the first call opens the backend (`objects`: sha256 → object ref
        of the spec's model files, as fleet.ship puts them)."""
        import socket

        backend = self._open(objects or {}).backend
        api = getattr(backend, "api", None)
        return DeviceInfo(node=self.node_id, device=self.device, batch_size=backend.batch_size,
                          seq_len=backend.seq_len, host=socket.gethostname(), pid=os.getpid(),
                          ais_bench_api=None if api is None else api if self.spec.pipeline else "infer",
                          previous_death=self.previous_death, constructed_at=self.constructed_at,
                          opened_at=self.opened_at, open_s=self.open_s)

    def evaluate(self, block_id: int, rows: BlockRows) -> BlockResult:
        return self._ready().evaluate(block_id, rows.input_ids, rows.score_from, rows.n_valid, rows.window_ids)

    def bench(self, loop: int, warmup: int, random_below: int | None = None) -> BenchFigures:
        """Pure inference: `warmup` batches untimed, then `loop` batches of zeros, or of random ids
        below `random_below` (ais_bench --loop, --pure_data_type zero|random). One `nll` call per
        batch whatever the spec's pipeline: the figure is the synchronous device time per batch
        that ais_bench --loop reports."""
        evaluator = self._ready()
        backend = evaluator.backend
        shape = (backend.batch_size, backend.seq_len)
        ids = (np.zeros(shape, np.int64) if random_below is None
               else np.random.default_rng(0).integers(0, random_below, shape))
        device_s, wall_s = evaluator.device_thread.run(_loop, backend, ids, warmup, loop)
        return BenchFigures(node=self.node_id, device=self.device, batch_size=backend.batch_size, batches=loop,
                            device_s=device_s, wall_s=wall_s)

    def close(self) -> None:
        if self.evaluator is not None:
            self.evaluator.close()


def _freeze() -> None:
    """Everything imported and built so far lives as long as the actor: take it out of Python's
    cyclic GC. A full collection then looks only at what the calls allocate, and takes
    microseconds instead of 35 ms: Ray makes every worker of the cluster collect at once when an
    object store passes 70% full, and every 10 minutes; with the GIL held meanwhile, the device
    thread could not start the next block (docs/design.md, "Dispatch: plain actors")."""
    gc.freeze()


def _loop(backend: Backend, ids: np.ndarray, warmup: int, loop: int) -> tuple[float, float]:
    """`warmup` untimed nll calls, then `loop` timed ones: (device seconds, wall seconds)."""
    import time

    for _ in range(warmup):
        backend.nll(ids)
    device_before, start = backend.device_seconds(), time.perf_counter()
    for _ in range(loop):
        backend.nll(ids)
    return backend.device_seconds() - device_before, time.perf_counter() - start


def remote_workers(spec: WorkerSpec, count: int, max_restarts: int, factory: BackendFactory | None = None,
                   calls_at_once: int = CALLS_AT_ONCE) -> list:
    """`count` DeviceWorker actors, each holding one of its backend's resource: {"NPU": 1} (om,
    simulated, torch-npu), one GPU (torch-cuda) or one CPU (onnx, torch).

    NPU actors ask for no CPU: the chip does the work, and 32 simulated devices must fit on a
    two-core machine. Ray restarts a dead actor up to `max_restarts` times; calls that were in
    flight fail and the driver sends their blocks again (max_task_retries=0), so it counts them.
    A threaded actor of `calls_at_once` calls: the device runs one block while the next is unpacked
    and the last one's result goes back (actors/device_thread.py); 1 makes the second call the
    driver keeps in flight wait in Ray's queue instead.
    """
    import ray

    if spec.kind.resource == "CPU":
        options = {"num_cpus": 1, "scheduling_strategy": "SPREAD"}
    elif spec.kind.resource == "GPU":
        options = {"num_cpus": 0, "num_gpus": 1}
    else:
        options = {"num_cpus": 0, "resources": {"NPU": 1}}
    actor = ray.remote(DeviceWorker).options(max_restarts=max_restarts, max_task_retries=0,
                                             max_concurrency=calls_at_once, **options)
    return [actor.remote(spec, f"cpu:{k}", factory) for k in range(count)]

