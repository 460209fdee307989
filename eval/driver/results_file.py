"""results.json: a run's numbers, as `npueval run` writes them and `npueval report` reads them
(docs/results.md lists every key and what it means).

Users read the file: its keys and their order stay as documented. `format_version` says which
layout a file has; a file written before a key existed reads with that key's default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from npueval.core.contracts import FLATTEN, check_format_version, from_json, key, to_json

FORMAT_VERSION = 1
RESULTS = "results.json"


@dataclass(frozen=True)
class Fallback:
    """backend auto did not get the OM: from what, to what, why."""

    from_: str = field(metadata=key("from"))
    to: str
    reason: str


@dataclass(frozen=True)
class Timeout:
    """A call that --block-timeout ended: its block and device."""

    block: int
    device: str


@dataclass(frozen=True)
class Phase:
    """A step of the run, in seconds from its start (steps may overlap: shards are verified while
    Ray starts, devices start working as each is ready)."""

    name: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class DeviceStart:
    """How a device came up, in seconds from the run's start: its actor asked for (`created_s`,
    the same for the devices of one start), its process running the actor (`process_s`), its
    backend open and ready for blocks (`ready_s`), and the driver hearing so (`heard_s`). The
    actor's times are its host's clock: on another host they carry the clocks' difference."""

    node: str
    device: str
    created_s: float
    process_s: float | None
    ready_s: float | None
    open_s: float | None  # opening the backend: the model's copy and load
    heard_s: float


@dataclass(frozen=True)
class NonfiniteWindow:
    """A window whose loss was NaN or Inf (--on-nonfinite skip), and where it was evaluated."""

    window_id: int
    node: str
    device: str


@dataclass(frozen=True)
class Check:
    """--check-against: the device's per-token NLL against the host ONNX model's."""

    batches: int
    tokens: int
    max_abs_err: float
    max_rel_err: float


@dataclass(frozen=True)
class RunCheck:
    """--check-against over the whole run: what the devices were compared with, and how many of
    their batches were (0: none, though the check was asked for)."""

    against: str
    batches: int
    tokens: int
    max_abs_err: float | None  # None where no batch was checked
    max_rel_err: float | None


@dataclass(frozen=True, kw_only=True)
class DeviceRow:
    node: str
    device: str
    windows: int
    batches: int
    device_s: float
    fps: float | None  # ais_bench's formula: 1000 · B / mean execute ms
    ais_bench_api: str | None = None  # om: "pipeline" or "infer"
    check: Check | None = None


@dataclass(frozen=True)
class Speed:
    """Rates over the blocks this command evaluated (eval_s: first block sent → last result)."""

    eval_s: float
    samples_per_s: float | None
    tokens_per_s: float | None
    device_fps_sum: float | None
    host_overhead: float | None


@dataclass(frozen=True)
class Provenance:
    npueval: str | None
    command: tuple[str, ...]
    python: str
    ray: str | None
    onnxruntime: str | None
    ais_bench: str | None
    cann: str | None
    hosts: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Results:
    format_version: int = FORMAT_VERSION
    mean_ce: float | None  # Σ NLL / Σ scored tokens, nats; null where nothing was scored
    ppl: float | None
    seed_ppl: float | None  # the port's number (docs/design.md, "Metrics")
    bits_per_byte: float | None = None  # Σ NLL / (Σ bytes · ln 2), where the data set records bytes
    byte_perplexity: float | None = None  # exp(Σ NLL / Σ bytes)
    word_perplexity: float | None = None  # exp(Σ NLL / Σ words), lm-eval's words (rolling data sets)
    guide_ppl: float | None = None  # Hugging Face's perplexity guide's number (stride data sets)
    tokens: int
    bytes: int | None = None  # UTF-8 bytes of text the scored tokens cover; None: not recorded
    words: int | None = None  # lm-eval's words of the documents scored (rolling data sets); None: not recorded
    windows: int
    windows_dropped: int
    backend: str
    fallback: Fallback | None
    pipeline: bool = False  # files from before the pipeline: a call per batch
    ais_bench_api: str | None = None
    retries: int
    timeouts: tuple[Timeout, ...] = ()
    windows_nonfinite: int = 0
    nonfinite: tuple[NonfiniteWindow, ...] = ()
    wall_s: float | None
    speed: Speed = field(metadata=FLATTEN)
    per_device: tuple[DeviceRow, ...]
    model_manifest_sha256: str | None
    data_manifest_sha256: str
    started_at: str
    ended_at: str
    nll_sum: float
    seed_batches: int
    batch_size: int
    seq_len: int
    limit: int | None
    drop_last: bool
    blocks: int
    blocks_resumed: int
    vocab_checked: bool
    model: str | None
    data: str
    provenance: Provenance
    phases: tuple[Phase, ...] = ()  # where the wall time went (eval/driver/timing.py)
    devices_started: int | None = None  # device actors this command started (None: an earlier npueval's file)
    startup: tuple[DeviceStart, ...] = ()  # each device that answered, in the order it did
    check: RunCheck | None = None  # None: no --check-against

    @property
    def devices_used(self) -> int:
        return sum(1 for d in self.per_device if d.windows)

    def to_json(self) -> dict:
        return to_json(self)

    @classmethod
    def from_json(cls, obj) -> Results:
        check_format_version(obj, FORMAT_VERSION)
        return from_json(cls, obj)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def read(cls, path: Path) -> Results:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
