"""On a host with torch_npu or a CUDA build of torch only: the torch-npu and torch-cuda backends
against the torch backend on CPU, on a tiny Llama.

Not yet run on hardware. Skipped where the device or its library is missing. Run with
`python -m pytest -m hardware tests/hardware/test_torch_backends.py`.
"""

from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.hardware


def _has(device: str) -> bool:
    try:
        import torch

        if device == "npu":
            import torch_npu  # noqa: F401

            return torch.npu.is_available()
        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.parametrize("device", ["npu", "cuda"])
def test_the_accelerator_backend_matches_the_cpu_one(tmp_path, device):
    if not _has(device):
        pytest.skip(f"no {device} here (torch_npu for npu, a CUDA build of torch for cuda)")
    from checkpoints import make_hf_checkpoint

    from npueval.actors.torch_backend import TorchBackend, TorchCudaBackend, TorchNpuBackend

    folder = make_hf_checkpoint(tmp_path / "llama", "llama")
    spec = SimpleNamespace(checkpoint=str(folder), batch_size=4, seq_len=64, threads=1)
    accelerated = (TorchNpuBackend if device == "npu" else TorchCudaBackend).open(spec, None, "0")
    cpu = TorchBackend(folder, 4, 64)
    ids = np.random.default_rng(0).integers(0, 256, (4, 64))
    # float32 on both; the accelerator's matmuls may use TF32 or reduced-precision paths.
    np.testing.assert_allclose(accelerated.nll(ids), cpu.nll(ids), rtol=2e-3, atol=2e-3)
