"""`npueval bench`: pure inference throughput on every device at once, and end to end.

The ais_bench `--loop` equivalent, run by every device actor at the same time: `warmup` batches
untimed, then `loop` batches of zeros or random ids. Per device, FPS is ais_bench's formula,
1000·B / mean execute ms (the device's own clock: ais_bench's exec_time_list on an NPU); summed
over the devices. A static-shape model has one batch size, so one model is given per batch size
(as the port's table: 1, 4, 8, 16, 32, 64); the simulated backend takes any list of sizes. With
`--data`, an end-to-end `run` over `--limit` windows adds samples/s through the whole pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from npueval.actors.worker import BenchFigures
from npueval.core.contracts import FLATTEN
from npueval.core.errors import UserError
from npueval.eval.data.dataset import open_data_set
from npueval.eval.driver.fleet import DeviceConfig, Fleet, connect
from npueval.eval.driver.model_spec import ModelSpec, resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[Path, ...] = ()  # one per batch size; none for the simulated backend
    batch_sizes: tuple[int, ...] = (1, 4, 8, 16, 32, 64)  # the simulated backend's
    seq_len: int = 512  # the simulated backend's
    devices: DeviceConfig = field(default_factory=DeviceConfig)
    loop: int = 20
    warmup: int = 2
    inputs: str = "zeros"  # zeros | random
    vocab: Path | None = None  # random ids of a bare model file need its vocab size
    data: Path | None = None  # end to end: `run` on this data set
    limit: int | None = None  # windows of the end-to-end run (default: 32 batches per device)

    def __post_init__(self):
        object.__setattr__(self, "models", tuple(Path(m) for m in self.models))
        if not self.devices.runs_model and self.models:
            raise UserError(f"--backend {self.devices.backend} runs no model: drop --model, give --batch-sizes")
        if self.devices.runs_model and not self.models:
            raise UserError("--model is needed (one per batch size), or --backend simulated")
        for name in ("loop", "seq_len"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.warmup < 0:
            raise UserError(f"--warmup {self.warmup}: must be 0 or more")
        if self.inputs not in ("zeros", "random"):
            raise UserError(f"--input {self.inputs!r}: choose zeros or random")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError(f"--batch-sizes {self.batch_sizes}: give sizes of at least 1")


@dataclass(frozen=True)
class DeviceBench:
    """One device's loop: what it ran (its keys at this level in JSON) and its rates."""

    figures: BenchFigures = field(metadata=FLATTEN)
    fps: float | None  # 1000·B / mean execute ms
    host_fps: float  # B·batches / wall s of the loop

    @classmethod
    def of(cls, f: BenchFigures) -> DeviceBench:
        mean_ms = 1000 * f.device_s / f.batches
        return cls(f, fps=1000 * f.batch_size / mean_ms if mean_ms > 0 else None,
                   host_fps=f.batch_size * f.batches / f.wall_s)


@dataclass(frozen=True)
class BenchRow:
    batch_size: int
    backend: str
    per_device: tuple[DeviceBench, ...]
    device_fps_sum: float  # Σ 1000·B / mean execute ms
    host_fps_sum: float  # Σ B·batches / wall s of the loop (what the host sees, copies included)
    end_to_end: float | None = None  # samples/s of `run` over the data set


def bench(config: BenchConfig) -> list[BenchRow]:
    """One row per model (or simulated batch size), all devices at once."""
    models = [resolve_model(m, config.vocab) for m in config.models]  # bad input is refused before Ray starts
    if config.data is not None:
        open_data_set(Path(config.data))
    session = connect(config.devices)  # once: each Fleet below joins it
    try:
        if not config.devices.runs_model:
            return [_bench_one(config, None, None, b) for b in config.batch_sizes]
        return [_bench_one(config, path, model, None) for path, model in zip(config.models, models)]
    finally:
        from npueval.cluster.ray_cluster import disconnect

        disconnect(session)


def _bench_one(config: BenchConfig, model_path: Path | None, model: ModelSpec | None,
               batch_size: int | None) -> BenchRow:
    import ray

    devices = config.devices if batch_size is None else dataclasses.replace(config.devices, batch_size=batch_size)
    random_below = None
    if config.inputs == "random":
        random_below = model.vocab_size if model is not None else 21128
        if random_below is None:
            raise UserError(f"--input random: the vocabulary of --model {model.name} is unknown; give --vocab")
    seq_len = config.seq_len if model is None else None
    with Fleet(devices, model, seq_len) as fleet:
        fleet.wait()
        runs = ray.get([a.bench.remote(config.loop, config.warmup, random_below) for a in fleet.actors])
        backend = fleet.choice.backend
    per_device = tuple(DeviceBench.of(f) for f in runs)
    row = BenchRow(
        batch_size=runs[0].batch_size,
        backend=backend,
        per_device=per_device,
        device_fps_sum=math.fsum(d.fps or 0.0 for d in per_device),
        host_fps_sum=math.fsum(d.host_fps for d in per_device),
    )
    if config.data is None:
        return row
    return dataclasses.replace(row, end_to_end=_end_to_end(config, devices, model_path, row.batch_size,
                                                           len(per_device)))


def _end_to_end(config: BenchConfig, devices: DeviceConfig, model_path: Path | None, batch_size: int,
                n_devices: int) -> float | None:
    from npueval.eval.driver.run import BATCHES_PER_BLOCK, RunConfig, run

    limit = config.limit or BATCHES_PER_BLOCK * batch_size * n_devices
    with tempfile.TemporaryDirectory(prefix="npueval-bench-") as out:
        results = run(RunConfig(data=config.data, out=Path(out), model=model_path, device=devices, limit=limit,
                                vocab=config.vocab)).results
    return results.speed.samples_per_s


def table(rows: list[BenchRow]) -> str:
    lines = ["batch  devices  backend     FPS/device  device FPS sum  host FPS sum  end to end samples/s"]
    for r in rows:
        fps = [d.fps for d in r.per_device if d.fps]
        per = f"{sum(fps) / len(fps):.1f}" if fps else "n/a"
        e2e = f"{r.end_to_end:.1f}" if r.end_to_end else "-"
        lines.append(f"{r.batch_size:>5}  {len(r.per_device):>7}  {r.backend:<10} {per:>11}  "
                     f"{r.device_fps_sum:>14.1f}  {r.host_fps_sum:>12.1f}  {e2e:>20}")
    return "\n".join(lines)
