"""The torch backends: the checkpoint in eager PyTorch, for users who do not compile to an OM.

`torch` runs on a CPU core, `torch-cuda` on the GPU Ray gave the actor, `torch-npu` on its NPU
through torch_npu (imported only there). The model is the checkpoint folder itself, loaded as
`npueval build` loads it (core/checkpoint.py: GPT2-Chinese, Llama, Qwen2, Mistral; float32,
eager attention); it is read where it lies, not shipped: on a cluster of several nodes it must be
at the same path on each (a shared file system). The NLL is computed from the logits in float32,
a few rows at a time, so the (rows, L, V) logits of a 150k vocabulary stay bounded.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npueval.core.errors import UserError

from .backend import check_batch

#: Rows of a batch run through the model at a time: (rows, L, V) float32 logits at once.
_ROWS_AT_ONCE = 2


class TorchBackend:
    device_type = "cpu"

    def __init__(self, checkpoint: str | Path, batch_size: int, seq_len: int, device: str = "cpu", threads: int = 1):
        import torch

        from npueval.core.checkpoint import load_model, open_checkpoint

        folder = Path(checkpoint)
        if not folder.is_dir():
            raise UserError(f"--model: the torch backends read the checkpoint {folder} where it lies, and host "
                            f"{socket.gethostname()} has no such folder; put it at that path on every node (a shared "
                            "file system)")
        if self.device_type == "cpu":
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self._model = load_model(open_checkpoint(folder, hash_weights=False)).to(self.device)
        self.batch_size, self.seq_len = batch_size, seq_len
        self._device_s = 0.0

    @classmethod
    def open(cls, spec, model_path: Path | None, npu: str | None) -> TorchBackend:
        return cls(spec.checkpoint, spec.batch_size, spec.seq_len, threads=spec.threads)

    def nll(self, input_ids: np.ndarray) -> np.ndarray:
        import torch

        x = check_batch(input_ids, self.batch_size, self.seq_len)
        start = time.perf_counter()
        out = []
        with torch.inference_mode():
            ids = torch.from_numpy(x).to(self.device)
            for lo in range(0, ids.shape[0], _ROWS_AT_ONCE):
                rows = ids[lo: lo + _ROWS_AT_ONCE]
                logits = self._model(rows).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1),
                                                        reduction="none")
                out.append(nll.reshape(rows.shape[0], -1).cpu())  # .cpu() waits for the device
        self._device_s += time.perf_counter() - start
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def nll_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        # Eager PyTorch returns each batch's NLL before the next is sent: no queue to keep fed.
        return [self.nll(batch) for batch in batches]

    def device_seconds(self) -> float:
        return self._device_s

    def close(self) -> None:
        self._model = None


class TorchCudaBackend(TorchBackend):
    device_type = "cuda"

    @classmethod
    def open(cls, spec, model_path: Path | None, npu: str | None) -> TorchCudaBackend:
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--backend torch-cuda: PyTorch on host {socket.gethostname()} sees no CUDA GPU (a CPU "
                            "build of torch, or no driver); install a CUDA build of torch, or use --backend torch")
        return cls(spec.checkpoint, spec.batch_size, spec.seq_len, device="cuda:0")  # Ray made its GPU the only one


class TorchNpuBackend(TorchBackend):
    device_type = "npu"

    @classmethod
    def open(cls, spec, model_path: Path | None, npu: str | None) -> TorchNpuBackend:
        try:
            import torch_npu  # noqa: F401  (registers the "npu" device with torch)
        except ImportError:
            raise UserError(f"--backend torch-npu: host {socket.gethostname()} has no torch_npu; install the "
                            "torch_npu wheel that matches its torch and CANN, or use --backend om") from None
        return cls(spec.checkpoint, spec.batch_size, spec.seq_len, device=f"npu:{npu or 0}")
