"""The Backend protocol: the only thing that differs between devices (docs/design.md, "Backend").

`nll(x)[:, j]` is the NLL of token `x[:, j + 1]` predicted from `x[:, :j + 1]`. A backend
takes a batch of at most `batch_size` rows of `seq_len` ids; a static-shape model pads a
short batch itself and returns only the real rows.

`nll_many(batches)` hands a block's batches over together, so that a device with a queue (an
NPU through ais_bench's `infer_pipeline`) runs them back to back instead of idling while the
host wakes up between calls; its results are those of `nll` on each batch, in order.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from npueval.core.errors import UserError

if TYPE_CHECKING:  # numpy, like the backends, only where a batch is handled: the CLI starts without it
    import numpy as np

    from .worker import WorkerSpec


@runtime_checkable
class Backend(Protocol):
    batch_size: int  # static batch of the compiled model
    seq_len: int  # L

    def nll(self, input_ids: np.ndarray) -> np.ndarray:
        """(b, L) integer ids, b <= batch_size → (b, L - 1) float32."""
        ...

    def nll_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        """A block's batches together, so a device with a queue runs them back to back; same
        results as nll on each."""
        ...

    def device_seconds(self) -> float:
        """Pure inference time so far."""
        ...

    def close(self) -> None: ...

    # Each backend class also has `open(spec, model_path, npu) -> Backend`, a classmethod that
    # builds it in a device actor from its WorkerSpec, the model's local copy (None: no model) and
    # the NPU id Ray assigned (None: none).


@dataclass(frozen=True)
class BackendKind:
    """One row of the backend table: what the rest of npueval needs to know about a backend
    without importing it (onnxruntime and ais_bench are heavy, and only one of them is installed
    on most hosts)."""

    name: str  # the --backend value
    implementation: str  # "module:Class", imported when an actor opens the backend
    model_file: str | None  # the build's file it runs ("om", "onnx"), "checkpoint" (the folder), None: no model
    resource: str  # what each actor holds: "NPU" (one chip), "GPU" (one), "CPU" (one core)
    on_chip: bool = False  # runs a real chip: its health is checked, its model copy obeys ais_bench's path rules
    stands_in: bool = False  # simulates NPUs: a Ray npueval starts gets made-up ones; --device-ms sets its time

    def load(self) -> type:
        module, _, cls = self.implementation.partition(":")
        return getattr(importlib.import_module(module, __package__), cls)

    def open(self, spec: WorkerSpec, model_path: Path | None, npu: str | None) -> Backend:
        return self.load().open(spec, model_path, npu)


BACKENDS: dict[str, BackendKind] = {
    kind.name: kind
    for kind in (
        BackendKind("om", ".om_backend:OmBackend", model_file="om", resource="NPU", on_chip=True),
        BackendKind("onnx", ".onnx_backend:OnnxBackend", model_file="onnx", resource="CPU"),
        BackendKind("simulated", ".simulated:SimulatedBackend", model_file=None, resource="NPU", stands_in=True),
        BackendKind("torch", ".torch_backend:TorchBackend", model_file="checkpoint", resource="CPU"),
        BackendKind("torch-cuda", ".torch_backend:TorchCudaBackend", model_file="checkpoint", resource="GPU"),
        BackendKind("torch-npu", ".torch_backend:TorchNpuBackend", model_file="checkpoint", resource="NPU"),
    )
}


def backend_kind(name: str) -> BackendKind:
    """The table's row for --backend `name`, or a UserError listing the choices."""
    if name not in BACKENDS:
        raise UserError(f"--backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def check_batch(input_ids: np.ndarray, batch_size: int, seq_len: int) -> np.ndarray:
    """The batch as int64 (b, L), or a ValueError that says what is wrong with it."""
    import numpy as np

    if input_ids.ndim != 2 or input_ids.shape[1] != seq_len or not 1 <= input_ids.shape[0] <= batch_size:
        raise ValueError(f"a batch must be (1…{batch_size}, {seq_len}) ids, not {input_ids.shape}")
    return input_ids.astype(np.int64, copy=False)


def pad_rows(input_ids: np.ndarray, batch_size: int, fill: int = 0) -> np.ndarray:
    """A short batch filled up to the model's static batch with rows of `fill`."""
    if input_ids.shape[0] == batch_size:
        return input_ids
    import numpy as np

    padded = np.full((batch_size, input_ids.shape[1]), fill, dtype=input_ids.dtype)
    padded[: input_ids.shape[0]] = input_ids
    return padded
