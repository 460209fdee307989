"""`npueval run`: evaluate a model on a prepared data set on every device of a Ray cluster.

The steps, each a function below: read the data manifest and the model, and refuse a pair that
does not fit (before any device work); connect to Ray; pick the backend (`auto`: om when the
cluster has NPUs and the model has an OM, otherwise onnx, said and recorded); start one actor
per device; cut the windows into blocks; send them (eval/dispatch.py), saving each finished
block in OUT/blocks; reduce every block, in block order, into results.json, windows.parquet and
result.txt.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from npueval.actors.worker import BACKENDS, BackendFactory, ModelFile, WorkerSpec, remote_workers
from npueval.cluster import ray_cluster

from . import results as res
from .blocks import BlockReader, WindowIndex, plan_blocks, read_index
from .dataset import read_manifest
from .dispatch import Dispatcher
from .errors import DatasetError, Interrupted, RunError, UserError
from .metrics import drop_last_rows
from .model_spec import ModelSpec, check_pair, resolve_model
from .provenance import provenance
from .vocab import file_sha256

log = logging.getLogger(__name__)

#: Model batches per block: many per call, so Ray's ~1 ms per call is noise (DESIGN.md, Ray).
BATCHES_PER_BLOCK = 32
#: Simulated devices of a Ray npueval starts itself, when --devices is not given.
DEFAULT_SIMULATED_DEVICES = 4


@dataclass(frozen=True)
class RunConfig:
    data: Path
    out: Path
    model: Path | None = None
    backend: str = "auto"  # auto | om | onnx | simulated
    devices: int | None = None
    batch_size: int | None = None  # the simulated backend's batch (the others: the model's)
    device_ms: float = 0.0
    limit: int | None = None
    drop_last: bool = False
    resume: bool = False
    force: bool = False
    address: str | None = None
    max_retries: int = 3
    vocab: Path | None = None
    check_against: Path | None = None
    check_batches: int = 4
    allow_unhealthy: bool = False
    block_windows: int | None = None  # default: BATCHES_PER_BLOCK model batches
    command: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        for name in ("data", "out", "model", "vocab", "check_against"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if self.backend not in ("auto", *BACKENDS):
            raise UserError(f"--backend {self.backend!r}: choose one of auto, {', '.join(BACKENDS)}")
        for name, low in (("devices", 1), ("batch_size", 1), ("limit", 1), ("block_windows", 1),
                          ("check_batches", 1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise UserError(f"--{name.replace('_', '-')} {value}: must be at least {low}")
        if self.max_retries < 0:
            raise UserError(f"--max-retries {self.max_retries}: must be 0 or more")
        if self.device_ms < 0:
            raise UserError(f"--device-ms {self.device_ms}: must be 0 or more")
        if self.device_ms and self.backend != "simulated":
            raise UserError("--device-ms is the simulated backend's device time: add --backend simulated")
        if self.model is None and self.backend in ("om", "onnx"):
            raise UserError(f"--backend {self.backend} needs --model (a build folder, a .onnx or an .om)")
        if self.model is None and self.backend == "auto":
            raise UserError("--model is needed (a build folder, a .onnx or an .om), or --backend simulated")
        if self.resume and self.force:
            raise UserError("--resume and --force contradict each other: pick one")


@dataclass(frozen=True)
class RunResult:
    out: Path
    results: dict = field(repr=False)


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    fallback: dict | None  # {from, to, reason} when auto did not get the OM


def run(config: RunConfig, *, factory: BackendFactory | None = None,
        progress: Callable[[int, int, int], None] | None = None) -> RunResult:
    """Evaluate; `progress(windows_done, windows_total, tokens_done)` after each block.

    `factory` builds each actor's backend instead of the stock ones (tests keep a ledger)."""
    started_at, clock = _now(), time.perf_counter()
    data = _read_data(config.data)
    model = resolve_model(config.model, config.vocab) if config.model is not None else None
    vocab_checked = check_pair(model, data, config.data) if model is not None else False
    folder_held = _refuse_held_out(config)
    session = ray_cluster.connect(config.address, simulated_npus=_simulated_npus(config),
                                  devices=_local_devices(config), allow_unhealthy=config.allow_unhealthy)
    actors = []
    try:
        choice = choose_backend(config, model, session.resources)
        count = device_count(config, choice.backend, session.resources)
        spec = _worker_spec(config, choice.backend, model, data, count, session.resources)
        actors = remote_workers(spec, count, config.max_retries, factory)
        described = _describe(actors)
        batch_size = _check_shapes(described, model, data, config)
        identity = _identity(config, choice.backend, model, data, batch_size)
        done = folder_held.start(identity, config.resume, config.force)
        index = read_index(config.data, data)
        total, keep = _windows(config, index, batch_size)
        blocks = plan_blocks(total, config.block_windows or BATCHES_PER_BLOCK * batch_size)
        todo = [b for b in blocks if b.block_id not in done]
        if done:
            log.info("resuming: %d of %d blocks already finished in %s", len(done), len(blocks), config.out)
        reader = BlockReader(config.data, data, keep, model.vocab_size if model else None)
        names = [f"{d['device']} on node {d['node'][:8]}" for d in described]
        dispatcher = Dispatcher(actors, names, config.max_retries)
        fresh = []
        already = sum(int(keep[b.first: b.stop].sum()) for b in blocks if b.block_id in done)
        progress_state = {"windows": already, "tokens": 0}

        def finished(result) -> None:
            folder_held.save(result)
            fresh.append(result)
            progress_state["windows"] += result.windows
            progress_state["tokens"] += result.scored_tokens
            if progress:
                progress(progress_state["windows"], int(keep.sum()), progress_state["tokens"])

        eval_start = time.perf_counter()
        try:
            dispatcher.run(todo, reader.read, finished)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: {len(done) + len(fresh)} of {len(blocks)} blocks are saved in "
                              f"{config.out}; continue with --resume") from None
        eval_s = time.perf_counter() - eval_start
        # Read back from OUT/blocks, so a fresh, a retried and a resumed run reduce the same bytes.
        all_blocks = [folder_held.load(b.block_id) for b in blocks]
        collected = res.collect(all_blocks, np.flatnonzero(keep))
        results = _results(config, choice, model, data, vocab_checked, batch_size, index, keep, total, collected,
                           all_blocks, fresh, eval_s, dispatcher.retries, described, started_at)
        results["wall_s"] = time.perf_counter() - clock
        folder_held.write_outputs(results, res.windows_table(collected, index), res.result_txt(results))
        return RunResult(config.out, results)
    finally:
        _stop(actors)
        ray_cluster.disconnect(session)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_data(data_dir: Path) -> dict:
    if not data_dir.is_dir():
        raise DatasetError(f"--data {data_dir}: no such folder; make it with `npueval prepare`")
    manifest = read_manifest(data_dir)
    if manifest is None:
        raise DatasetError(f"--data {data_dir}: no finished data set (manifest.json missing); run `npueval prepare`")
    return manifest


def _refuse_held_out(config: RunConfig):
    """Fail before starting Ray when OUT holds blocks and neither --resume nor --force was given."""
    from .run_folder import RunFolder

    folder = RunFolder(config.out)
    held = folder.finished()
    if held and not (config.resume or config.force):
        raise DatasetError(
            f"--out {config.out} already holds {len(held)} finished blocks of a run: continue it with --resume, "
            "or start over with --force"
        )
    return folder


def _joins(config: RunConfig) -> bool:
    """Whether the run joins a cluster (--address, or RAY_ADDRESS as `ray job submit` sets it)."""
    import os

    return bool(config.address or os.environ.get("RAY_ADDRESS"))


def _simulated_npus(config: RunConfig) -> int | None:
    """The "NPU" custom resource of a Ray npueval starts for the simulated backend."""
    if config.backend != "simulated" or _joins(config):
        return None
    return config.devices or DEFAULT_SIMULATED_DEVICES


def _local_devices(config: RunConfig):
    """This host's chips, whose healthy ones a Ray npueval starts makes visible (om only)."""
    if config.backend in ("onnx", "simulated") or _joins(config):
        return None
    from npueval.cluster.discovery import discover

    return discover() or None


def choose_backend(config: RunConfig, model: ModelSpec | None, resources: dict) -> BackendChoice:
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
        return BackendChoice("onnx", {"from": "om", "to": "onnx", "reason": reason})
    reason = "the model has no OM" + ("" if npus else " and the Ray cluster has no NPU")
    log.info("backend auto: onnx (%s)", reason)
    return BackendChoice("onnx", None)


def device_count(config: RunConfig, backend: str, resources: dict) -> int:
    """--devices N, else every NPU of the cluster (om, simulated) or one CPU worker per node (onnx)."""
    if backend == "onnx":
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


def _worker_spec(config: RunConfig, backend: str, model: ModelSpec | None, data: dict, count: int,
                 resources: dict) -> WorkerSpec:
    if backend == "simulated":
        batch = config.batch_size or (model.batch_size if model and model.batch_size else 8)
        shipped = None
    else:
        if config.batch_size is not None and model.batch_size not in (None, config.batch_size):
            raise UserError(f"--batch-size {config.batch_size}: the model is compiled for batch {model.batch_size}; "
                            "rebuild it with `npueval build --batch-size`")
        batch = model.batch_size or 0
        shipped = _ship(model.om if backend == "om" else model.onnx)
    if config.check_against and not config.check_against.is_file():
        raise UserError(f"--check-against {config.check_against}: no such file")
    reference = _ship(config.check_against) if config.check_against else None
    # onnx workers spread over the nodes: each gets its share of the cores, not all of them.
    threads = max(1, int(resources.get("CPU", 1)) // count)
    return WorkerSpec(backend=backend, model=shipped, batch_size=batch, seq_len=data["n_ctx"],
                      device_ms=config.device_ms, threads=threads if backend == "onnx" else 1,
                      reference=reference, check_batches=config.check_batches if reference else 0,
                      allow_unhealthy=config.allow_unhealthy)


def _describe(actors: list) -> list[dict]:
    """Each actor's device and the shapes its model takes; a device that cannot start ends the run."""
    import ray

    described = []
    for k, ref in enumerate([a.describe.remote() for a in actors]):
        try:
            described.append(ray.get(ref))
        except Exception as exc:  # noqa: BLE001 - the user's error as it is, any other as a run failure
            cause = getattr(exc, "cause", None)
            if isinstance(cause, (UserError, RunError)):
                raise cause from None
            raise RunError(f"device actor {k} could not start: {str(exc).strip().splitlines()[0]}") from None
    return described


def _check_shapes(described: list[dict], model: ModelSpec | None, data: dict, config: RunConfig) -> int:
    shapes = {(d["batch_size"], d["seq_len"]) for d in described}
    if len(shapes) != 1:
        raise RunError(f"the devices report different model shapes {sorted(shapes)}: is the same model on every node?")
    ((batch, seq_len),) = shapes
    if seq_len != data["n_ctx"]:
        raise UserError(f"--model {model.name if model else ''} takes sequences of {seq_len} tokens but --data "
                        f"{config.data} holds windows of {data['n_ctx']}")
    return batch


def _identity(config: RunConfig, backend: str, model: ModelSpec | None, data: dict, batch_size: int) -> dict:
    """What the blocks in OUT are blocks of: --resume continues only the same run."""
    return {
        "data_manifest_sha256": file_sha256(config.data / "manifest.json"),
        "model": model.identity if model else None,
        "backend": backend,
        "batch_size": batch_size,
        "seq_len": data["n_ctx"],
        "limit": config.limit,
        "drop_last": config.drop_last,
        "block_windows": config.block_windows or BATCHES_PER_BLOCK * batch_size,
    }


def _windows(config: RunConfig, index: WindowIndex, batch_size: int) -> tuple[int, np.ndarray]:
    """How many windows the run covers (--limit) and which of them it scores (--drop-last)."""
    total = min(config.limit or index.piece.size, index.piece.size)
    keep = np.zeros(index.piece.size, dtype=bool)
    keep[:total] = drop_last_rows(index.piece[:total], batch_size) if config.drop_last else True
    return total, keep


def _results(config, choice, model, data, vocab_checked, batch_size, index, keep, total, collected, all_blocks,
             fresh, eval_s, retries, described, started_at) -> dict:
    metrics = res.loss(collected, index, batch_size)
    return {
        "mean_ce": res.finite(metrics.mean_ce),
        "ppl": res.finite(metrics.perplexity),
        "seed_ppl": res.finite(metrics.seed_ppl),
        "tokens": metrics.scored_tokens,
        "windows": metrics.windows,
        "windows_dropped": int(total - keep[:total].sum()),
        "backend": choice.backend,
        "fallback": choice.fallback,
        "retries": retries,
        "wall_s": None,  # the caller's clock
        **res.speed(fresh, eval_s, batch_size),
        "per_device": res.per_device(all_blocks, batch_size, described),
        "model_manifest_sha256": model.manifest_sha256 if model else None,
        "data_manifest_sha256": file_sha256(config.data / "manifest.json"),
        "started_at": started_at,
        "ended_at": _now(),
        "nll_sum": metrics.nll_sum,
        "seed_batches": metrics.seed_batches,
        "batch_size": batch_size,
        "seq_len": data["n_ctx"],
        "limit": config.limit,
        "drop_last": config.drop_last,
        "blocks": len(all_blocks),
        "blocks_resumed": len(all_blocks) - len(fresh),
        "vocab_checked": vocab_checked,
        "model": model.name if model else None,
        "data": str(config.data),
        "provenance": provenance(list(config.command), [d["host"] for d in described]),
    }


def _stop(actors: list) -> None:
    """Close each backend (ais_bench frees its device memory), then let the actors go."""
    if not actors:
        return
    import ray

    try:
        ray.get([a.close.remote() for a in actors], timeout=30)
    except Exception as exc:  # noqa: BLE001 - a dead actor has nothing left to close
        log.debug("closing the device actors: %s", exc)
    for a in actors:
        ray.kill(a)
