"""The devices of a run: which backend, how many actors, started on Ray and stopped again.

`npueval run` and `npueval bench` share it. `Fleet` connects to Ray (joins a cluster, or starts
a local one on 127.0.0.1), picks the backend (`auto`: om when the cluster has NPUs and the model
has an OM, otherwise onnx, said and recorded), ships the model's bytes through the object store,
starts one actor per device and asks each what it runs; leaving the `with` block closes the
backends and lets Ray go.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

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

from .model_spec import ModelSpec
from .results_file import Fallback

log = logging.getLogger(__name__)

#: Simulated devices of a Ray npueval starts itself, when --devices is not given.
DEFAULT_SIMULATED_DEVICES = 4


@dataclass(frozen=True)
class DeviceConfig:
    """The flags that say which devices run what (shared by run and bench)."""

    backend: str = "auto"  # auto, or a name in the backend table (actors/backend.py)
    devices: int | None = None
    batch_size: int | None = None  # the simulated backend's batch (the others: the model's)
    device_ms: float = 0.0
    address: str | None = None
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
                               devices=_local_devices(config), allow_unhealthy=config.allow_unhealthy)


class Fleet:
    """`with Fleet(config, model, seq_len) as fleet:` one actor per device, starting; `described`
    and `batch_size` wait for them to answer.

    `seq_len`: the data's window length, which the model must take (None: whatever it takes)."""

    def __init__(self, config: DeviceConfig, model: ModelSpec | None, seq_len: int | None,
                 factory: BackendFactory | None = None):
        self.config, self.model, self.seq_len, self.factory = config, model, seq_len, factory
        self.actors: list = []

    def __enter__(self) -> Fleet:
        config = self.config
        self.session = connect(config)
        try:
            self.choice = choose_backend(config, self.model, self.session.resources)
            count = device_count(config, self.choice.backend, self.session.resources)
            spec = worker_spec(config, self.choice.backend, self.model, self.seq_len, count, self.session.resources)
            self.spec = spec
            self.actors = remote_workers(spec, count, config.max_retries, self.factory, config.calls_at_once)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        stop(self.actors)
        ray_cluster.disconnect(self.session)

    @functools.cached_property
    def described(self) -> list[DeviceInfo]:
        """What each actor runs: asked on first use, so that the caller can work while they start."""
        return describe(self.actors)

    @functools.cached_property
    def batch_size(self) -> int:
        """The model batch every device reports (waits for the actors)."""
        return self._batch_size()

    def wait(self) -> None:
        """Until every device has answered; one that cannot start ends the command with its error."""
        _ = self.batch_size

    @property
    def planned_batch_size(self) -> int | None:
        """The batch the devices will report, known before they answer: the simulated backend's,
        or a model's whose manifest gives it (None: only the devices can say)."""
        return self.spec.batch_size or None

    @property
    def names(self) -> list[str]:
        return [f"{d.device} on node {d.node[:8]}" for d in self.described]

    @property
    def may_abort(self) -> list[bool]:
        """Per device: whether an error may end its process instead of raising (infer_pipeline)."""
        return [d.ais_bench_api == "pipeline" for d in self.described]

    @property
    def ais_bench_api(self) -> str | None:
        """How the om devices call ais_bench ("pipeline" or "infer"; "mixed" if they differ), or None."""
        apis = {d.ais_bench_api for d in self.described} - {None}
        return None if not apis else apis.pop() if len(apis) == 1 else "mixed"

    def _batch_size(self) -> int:
        shapes = {(d.batch_size, d.seq_len) for d in self.described}
        if len(shapes) != 1:
            raise RunError(f"the devices report different model shapes {sorted(shapes)}: "
                           "is the same model on every node?")
        ((batch, seq_len),) = shapes
        if self.seq_len is not None and seq_len != self.seq_len:
            raise UserError(f"--model {self.model.name if self.model else ''} takes sequences of {seq_len} tokens "
                            f"but the data holds windows of {self.seq_len}")
        return batch


def _joins(config: DeviceConfig) -> bool:
    """Whether the run joins a cluster (--address, or RAY_ADDRESS as `ray job submit` sets it)."""
    return bool(config.address or os.environ.get("RAY_ADDRESS"))


def _simulated_npus(config: DeviceConfig) -> int | None:
    """The made-up "NPU" resource of a Ray npueval starts for a backend that stands in for NPUs."""
    if config.kind is None or not config.kind.stands_in or _joins(config):
        return None
    return config.devices or DEFAULT_SIMULATED_DEVICES


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
    count = config.devices or int(resources.get("NPU", 0))
    if count < 1:
        raise UserError(f"--backend {backend}: the Ray cluster has no NPU; run on an NPU host, or use --backend onnx")
    ray_cluster.require(resources, {"NPU": count})
    return count


def _ship(path: Path) -> ModelFile:
    """The model file's bytes into the object store: every node writes its own local copy."""
    import ray

    data = path.read_bytes()
    return ModelFile(path.name, hashlib.sha256(data).hexdigest(), len(data), ray.put(data))


def worker_spec(config: DeviceConfig, backend: str, model: ModelSpec | None, seq_len: int | None, count: int,
                resources: dict) -> WorkerSpec:
    kind = BACKENDS[backend]
    if kind.model_file is None:
        batch = config.batch_size or (model.batch_size if model and model.batch_size else 8)
        shipped = None
    else:
        if config.batch_size is not None and model.batch_size not in (None, config.batch_size):
            raise UserError(f"--batch-size {config.batch_size}: the model is compiled for batch {model.batch_size}; "
                            "rebuild it with `npueval build --batch-size`")
        batch = model.batch_size or 0
        shipped = _ship(model.file(kind.model_file))
    reference = _ship(config.check_against) if config.check_against else None
    # onnx workers spread over the nodes: each gets its share of the cores, not all of them.
    threads = max(1, int(resources.get("CPU", 1)) // count)
    return WorkerSpec(backend=backend, model=shipped, batch_size=batch, seq_len=seq_len or 512,
                      device_ms=config.device_ms, threads=threads if kind.resource == "CPU" else 1,
                      reference=reference, check_batches=config.check_batches if reference else 0,
                      allow_unhealthy=config.allow_unhealthy, pipeline=config.pipeline)


def describe(actors: list) -> list[DeviceInfo]:
    """Each actor's device and the shapes its model takes; a device that cannot start ends the run."""
    import ray

    described = []
    for k, ref in enumerate([a.describe.remote() for a in actors]):
        try:
            described.append(ray.get(ref))
        except Exception as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, (UserError, RunError)):
                raise cause from None
            raise RunError(f"device actor {k} could not start: {root_cause(exc)}") from None
    return described


def stop(actors: list) -> None:
    """Close each backend (ais_bench frees its device memory), then let the actors go."""
    if not actors:
        return
    import ray

    try:
        ray.get([a.close.remote() for a in actors], timeout=30)
    except Exception as exc:
        log.debug("closing the device actors: %s", exc)
    for a in actors:
        ray.kill(a)
