"""The devices of a run: which backend, how many actors, started on Ray and stopped again.

`npueval run` and `npueval bench` share it. `Fleet` connects to Ray (joins a cluster, or starts
a local one on 127.0.0.1), picks the backend (`auto`: om when the cluster has NPUs and the model
has an OM, otherwise onnx, said and recorded), ships the model's bytes through the object store,
starts one actor per device and asks each what it runs; leaving the `with` block closes the
backends and lets Ray go.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npueval.actors.backend import BACKENDS, BackendKind
from npueval.actors.worker import (
    CALLS_AT_ONCE,
    BackendFactory,
    DeviceInfo,
    ModelFile,
    WorkerSpec,
    remote_workers,
)
from npueval.cluster import ray_cluster
from npueval.core.errors import RunError, UserError, root_cause
from npueval.core.files import cached_sha256
from npueval.core.model_io import model_files

from .model_spec import ModelSpec
from .results_file import DeviceStart, Fallback
from .timing import Phases

log = logging.getLogger(__name__)

#: Simulated devices of a Ray npueval starts itself, when --devices is not given.
DEFAULT_SIMULATED_DEVICES = 4
#: How long, at the end, devices still starting get to come up before they are let go, on a
#: cluster that outlives the command (Fleet.stop_devices): the last of 32 actors starting on two
#: cores came up 8.5 s after the first (BENCHMARKS.md, "`npueval run` on eval sets of real size").
STARTING_GRACE_S = 10.0


@dataclass(frozen=True)
class DeviceConfig:
    """The flags that say which devices run what (shared by run and bench)."""

    backend: str = "auto"  # auto, or a name in the backend table (actors/backend.py)
    devices: int | None = None
    batch_size: int | None = None  # the simulated and torch backends' batch (the others: the model's)
    device_ms: float = 0.0
    address: str | None = None
    connect_timeout: float = ray_cluster.CONNECT_TIMEOUT_S  # seconds a cluster joined has to answer
    max_retries: int = 3
    check_against: Path | None = None
    check_batches: int = 4
    allow_unhealthy: bool = False
    pipeline: bool = True  # run: a block's batches handed over together (--no-pipeline: False)
    calls_at_once: int = CALLS_AT_ONCE  # calls an actor runs at once (a library knob for benchmarks, no flag)

    def __post_init__(self):
        if self.check_against is not None:
            object.__setattr__(self, "check_against", Path(self.check_against))
        if self.backend not in ("auto", *BACKENDS):
            raise UserError(f"--backend {self.backend!r}: choose one of auto, {', '.join(BACKENDS)}")
        stands_in = self.kind is not None and self.kind.stands_in
        for name in ("devices", "batch_size", "check_batches", "calls_at_once"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} {value}: must be at least 1")
        if self.max_retries < 0:
            raise UserError(f"--max-retries {self.max_retries}: must be 0 or more")
        if not self.connect_timeout > 0:
            raise UserError(f"--connect-timeout {self.connect_timeout:g}: must be more than 0 seconds")
        if self.device_ms < 0:
            raise UserError(f"--device-ms {self.device_ms}: must be 0 or more")
        if self.device_ms and not stands_in:
            raise UserError("--device-ms is the simulated backend's device time: add --backend simulated")
        if self.check_against is not None and not Path(self.check_against).is_file():
            raise UserError(f"--check-against {self.check_against}: no such file; give the ONNX model to compare "
                            "with, e.g. BUILD/model.onnx")  # checked before Ray starts

    @property
    def kind(self) -> BackendKind | None:
        """The backend table's row of --backend (None for auto: chosen once Ray is up)."""
        return None if self.backend == "auto" else BACKENDS[self.backend]

    @property
    def runs_model(self) -> bool:
        """Whether the backend runs a model file (auto may: it picks one that does)."""
        return self.kind is None or self.kind.model_file is not None


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    fallback: Fallback | None  # when auto did not get the OM


def connect(config: DeviceConfig) -> ray_cluster.RaySession:
    """Join the cluster the flags name, or start a local Ray fit for the backend asked for."""
    return ray_cluster.connect(config.address, simulated_npus=_simulated_npus(config),
                               devices=_local_devices(config), allow_unhealthy=config.allow_unhealthy,
                               connect_timeout=config.connect_timeout)


class Fleet:
    """`with Fleet(config, model, seq_len) as fleet:` one actor per device, starting.

    Each actor answers `describe` once it is up (`ready_refs`, in actor order); `accept(k, ref)`
    checks and records an answer as it comes (the dispatcher hands a device work as soon as it
    has answered), and `described` waits for every answer. `seq_len`: the data's window length,
    which the model must take (None: whatever it takes)."""

    def __init__(self, config: DeviceConfig, model: ModelSpec | None, seq_len: int | None,
                 factory: BackendFactory | None = None, phases: Phases | None = None):
        self.config, self.model, self.seq_len, self.factory = config, model, seq_len, factory
        self.phases = phases or Phases(time.perf_counter())
        self.actors: list = []
        self.ready_refs: list = []
        self.answered: dict[int, DeviceInfo] = {}
        self.heard_at: dict[int, float] = {}  # time.time() when the driver heard each answer
        self.created_at = 0.0  # time.time() when the actors were asked for
        self.objects: dict = {}  # sha256 → object ref of each model file shipped
        self.session = None

    def __enter__(self) -> Fleet:
        config = self.config
        with self.phases.timed("ray_start"):
            self.session = connect(config)
        try:
            self.choice = choose_backend(config, self.model, self.session.resources)
            count = device_count(config, self.choice.backend, self.session.resources)
            with self.phases.timed("model_shipped"):
                spec = worker_spec(config, self.choice.backend, self.model, self.seq_len, count,
                                   self.session.resources, self.objects)
            self.spec = spec
            self.created, self.created_at = time.perf_counter(), time.time()
            self.actors = remote_workers(spec, count, config.max_retries, self.factory, config.calls_at_once)
            self.ready_refs = [self.describe(a) for a in self.actors]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop_devices()
        self.release()

    def describe(self, actor):
        """The actor's describe() call, which opens its backend with the shipped model files: the
        first after it starts, and the dispatcher's probe after Ray restarts it."""
        return actor.describe.remote(self.objects)

    def stop_devices(self) -> None:
        """Close the backends of the devices that answered and let every actor go (again: nothing).

        Ray leaks the lease, and with it the NPU, of an actor killed while its creation is being
        handed to a worker (the worker logs "Mismatched ActorID: ignoring KillActor"; see
        ray-project/ray#27743): a later run on the same cluster then waits forever for that chip.
        On a cluster that outlives this command, the devices still starting are given up to
        STARTING_GRACE_S to come up before they are let go; a Ray npueval started stops anyway."""
        late = [ref for k, ref in enumerate(self.ready_refs[:len(self.actors)]) if k not in self.answered]
        if late and self.session is not None and not self.session.started_here:
            import ray

            ray.wait(late, num_returns=len(late), timeout=STARTING_GRACE_S)
        stop([a for k, a in enumerate(self.actors) if k in self.answered],
             [a for k, a in enumerate(self.actors) if k not in self.answered])
        self.actors = []

    def release(self) -> None:
        """Leave Ray: a Ray npueval started stops (the phase ray_stop); again: nothing."""
        if self.session is not None:
            session, self.session = self.session, None
            with self.phases.timed("ray_stop"):
                ray_cluster.disconnect(session)

    def _record(self, k: int, info: DeviceInfo) -> None:
        """Actor k has answered: record it, or end the run where its model does not fit the data or
        the devices already known."""
        shape = (info.batch_size, info.seq_len)
        known = {(d.batch_size, d.seq_len) for d in self.answered.values()}
        if known and shape not in known:
            raise RunError(f"the devices report different model shapes {sorted(known | {shape})}: is the same model "
                           "on every node?")
        planned = self.planned_batch_size
        if planned is not None and info.batch_size != planned:
            raise RunError(f"{info.name} runs batches of {info.batch_size} where {planned} were planned: is "
                           "the same model on every node?")
        if self.seq_len is not None and info.seq_len != self.seq_len:
            raise UserError(f"--model {self.model.name if self.model else ''} takes sequences of {info.seq_len} "
                            f"tokens but the data holds windows of {self.seq_len}")
        self.answered[k] = info
        self.heard_at[k] = time.time()
        if len(self.answered) == 1:
            self.phases.add("first_device_ready", self.created, time.perf_counter())
        if len(self.answered) == len(self.ready_refs):
            self.phases.add("devices_ready", self.created, time.perf_counter())

    def accept(self, k: int, ref) -> DeviceInfo:
        """Actor k's answer (`ready_refs[k]`, done), checked and recorded; or the run's end."""
        import ray

        if k not in self.answered:
            self._record(k, answer(k, ref, ray))
        return self.answered[k]

    @functools.cached_property
    def described(self) -> list[DeviceInfo]:
        """What every actor runs, in actor order; waits for the ones that have not answered yet."""
        return [self.accept(k, ref) for k, ref in enumerate(self.ready_refs)]

    @property
    def batch_size(self) -> int:
        """The model batch every device reports (waits for them all)."""
        return self.described[0].batch_size

    def wait(self) -> None:
        """Until every device has answered; one that cannot start ends the command with its error."""
        _ = self.described

    @property
    def planned_batch_size(self) -> int | None:
        """The batch the devices will report, known before they answer: the simulated backend's,
        or a model's whose manifest gives it (None: only the devices can say)."""
        return self.spec.batch_size or None

    def startup(self, epoch: float) -> list[DeviceStart]:
        """How each device that answered came up, in the order the driver heard them, in seconds
        from EPOCH (the run's start, time.time())."""
        def since(t: float | None) -> float | None:
            return None if t is None else t - epoch

        return [DeviceStart(node=info.node, device=info.device, created_s=self.created_at - epoch,
                            process_s=since(info.constructed_at), ready_s=since(info.opened_at), open_s=info.open_s,
                            heard_s=self.heard_at[k] - epoch)
                for k, info in sorted(self.answered.items(), key=lambda item: self.heard_at[item[0]])]

    def answered_in_order(self) -> list[DeviceInfo]:
        """The devices that have answered so far, in actor order (a run may end before a late one)."""
        return [self.answered[k] for k in sorted(self.answered)]

    @property
    def ais_bench_api(self) -> str | None:
        """How the om devices call ais_bench ("pipeline" or "infer"; "mixed" if they differ), or None."""
        apis = {d.ais_bench_api for d in self.answered.values()} - {None}
        return None if not apis else apis.pop() if len(apis) == 1 else "mixed"


def answer(k: int, ref, ray) -> DeviceInfo:
    """Actor k's answer to `describe`; a device that cannot start ends the run with its own error."""
    try:
        return ray.get(ref)
    except Exception as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, (UserError, RunError)):
            raise cause from None
        raise RunError(f"device actor {k} could not start: {root_cause(exc)}") from None


def _joins(config: DeviceConfig) -> bool:
    """Whether the run joins a cluster (--address, or RAY_ADDRESS as `ray job submit` sets it)."""
    return bool(config.address or os.environ.get("RAY_ADDRESS"))


def _simulated_npus(config: DeviceConfig) -> int | None:
    """The made-up "NPU" resource of a Ray npueval starts for a backend that stands in for NPUs."""
    if config.kind is None or not config.kind.stands_in or _joins(config):
        return None
    count = config.devices or DEFAULT_SIMULATED_DEVICES
    ray_cluster.check_room_for_simulated(count)
    return count


def _local_devices(config: DeviceConfig):
    """This host's chips, whose healthy ones a Ray npueval starts makes visible (auto, or a backend
    on a chip). Where npu-smi fails (DCMI is root-only on some hosts), Ray's own count stands."""
    if (config.kind is not None and not config.kind.on_chip) or _joins(config):
        return None
    from npueval.cluster.devices import discover_or_warn

    return discover_or_warn("the chips' health is not checked, and Ray's own count of the NPUs stands") or None


def choose_backend(config: DeviceConfig, model: ModelSpec | None, resources: dict) -> BackendChoice:
    npus = resources.get("NPU", 0)
    if config.backend == "simulated":
        return BackendChoice("simulated", None)
    if model is None:
        raise UserError("--model is needed (a build folder, a .onnx or an .om), or --backend simulated")
    if config.backend == "om":
        if model.om is None:
            raise UserError(f"--backend om: --model {model.name} has no OM; compile it with atc.sh on an NPU host")
        return BackendChoice("om", None)
    if config.backend != "auto" and BACKENDS[config.backend].model_file == "checkpoint":
        if model.checkpoint is None:
            raise UserError(f"--backend {config.backend}: --model {model.name} names no checkpoint folder; point "
                            "--model at the checkpoint (config.json and weights) or at a build folder made from one "
                            "on this host")
        return BackendChoice(config.backend, None)
    if config.backend == "onnx":
        if model.onnx is None:
            raise UserError(f"--backend onnx: --model {model.name} is an OM only; point --model at its build folder")
        return BackendChoice("onnx", None)
    if model.om is not None and npus > 0:
        log.info("backend auto: om (the model has an OM and the cluster %g NPUs)", npus)
        return BackendChoice("om", None)
    if model.om is not None:
        if model.onnx is None:
            raise UserError(f"--model {model.om} is an OM and the Ray cluster has no NPU: run on an NPU host, "
                            "or point --model at the build folder to run its ONNX on CPU")
        reason = "the Ray cluster has no NPU"
        log.warning("backend auto: running the ONNX model %s on CPU instead of the OM: %s", model.onnx, reason)
        return BackendChoice("onnx", Fallback("om", "onnx", reason))
    reason = "the model has no OM" + ("" if npus else " and the Ray cluster has no NPU")
    log.info("backend auto: onnx (%s)", reason)
    return BackendChoice("onnx", None)


def device_count(config: DeviceConfig, backend: str, resources: dict) -> int:
    """--devices N, else every NPU of the cluster (om, simulated) or one CPU worker per node (onnx)."""
    if BACKENDS[backend].resource == "CPU":
        import ray

        count = config.devices or max(1, sum(1 for n in ray.nodes() if n["Alive"]))
        ray_cluster.require(resources, {"CPU": count})
        return count
    resource = BACKENDS[backend].resource
    count = config.devices or int(resources.get(resource, 0))
    if count < 1:
        raise UserError(f"--backend {backend}: the Ray cluster has no {resource}; run on a host with one, or use "
                        "--backend onnx")
    ray_cluster.require(resources, {resource: count})
    return count


def ship(path: Path, objects: dict) -> ModelFile:
    """The model's bytes, and its external weights' if it has them, into the object store (their
    refs into `objects` by sha256, which each actor's describe() gets): every node writes its own
    local copy."""
    import ray

    def put(file: Path, weights: ModelFile | None = None) -> ModelFile:
        # As uint8s mapped from the file: Ray copies them into the object store from the page
        # cache, and each actor reads them there in place (bytes would be copied into each
        # process, the driver's and every actor's).
        size = file.stat().st_size
        # A plain ndarray over the mapping: a memmap would be pickled in band, as a copy.
        data = np.memmap(file, dtype=np.uint8, mode="r").view(np.ndarray) if size else np.zeros(0, np.uint8)
        # Known since the model was resolved (or built); each node checks the bytes it gets against it.
        sha256 = cached_sha256(file)
        objects[sha256] = ray.put(data)
        return ModelFile(file.name, sha256, size, weights)

    model, *weights = model_files(path)
    return put(model, put(weights[0]) if weights else None)


def worker_spec(config: DeviceConfig, backend: str, model: ModelSpec | None, seq_len: int | None, count: int,
                resources: dict, objects: dict | None = None) -> WorkerSpec:
    """What every actor runs; the model files it names go into the object store, their refs into
    `objects`."""
    objects = {} if objects is None else objects
    kind = BACKENDS[backend]
    if kind.model_file in (None, "checkpoint"):  # nothing shipped: no model, or the checkpoint where it lies
        batch = config.batch_size or (model.batch_size if model and model.batch_size else 8)
        shipped = None
    else:
        if config.batch_size is not None and model.batch_size not in (None, config.batch_size):
            raise UserError(f"--batch-size {config.batch_size}: the model is compiled for batch {model.batch_size}; "
                            "rebuild it with `npueval build --batch-size`")
        batch = model.batch_size or 0
        shipped = ship(model.file(kind.model_file), objects)
    reference = ship(config.check_against, objects) if config.check_against else None
    # onnx workers spread over the nodes: each gets its share of the cores, not all of them.
    threads = max(1, int(resources.get("CPU", 1)) // count)
    checkpoint = str(model.checkpoint.resolve()) if kind.model_file == "checkpoint" else None
    return WorkerSpec(backend=backend, model=shipped, checkpoint=checkpoint, batch_size=batch, seq_len=seq_len or 512,
                      device_ms=config.device_ms, threads=threads if kind.resource == "CPU" else 1,
                      reference=reference, check_batches=config.check_batches if reference else 0,
                      allow_unhealthy=config.allow_unhealthy, pipeline=config.pipeline)


def stop(actors: list, starting: list = ()) -> None:
    """Close each backend (ais_bench frees its device memory), then let the actors go; those still
    `starting` are let go at once (a close would wait for their start)."""
    if not actors and not starting:
        return
    import ray

    try:
        ray.get([a.close.remote() for a in actors], timeout=30)
    except Exception as exc:
        log.debug("closing the device actors: %s", exc)
    for a in [*actors, *starting]:
        ray.kill(a)
