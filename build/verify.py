"""Stage 5: every stage's ONNX against the PyTorch model in float32, on onnxruntime.

The PyTorch logits are computed once for the build (`reference_logits`), so that the model can go
once it is exported: a stage is checked while only its own weights are in memory.

Relative error ‖out − ref‖ / ‖ref‖ and max abs error go into the manifest; a stage above the
tolerance (1e-4 relative unless loosened) fails the build.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from npueval.core.errors import RunError
from npueval.core.model_io import INPUT, LOGITS, NLL, TARGETS, targets_for

DEFAULT_TOLERANCE = 1e-4


def random_ids(batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, (batch, seq_len), dtype=np.int64)


def reference_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-position NLL of `targets` under `logits` (B, L, V) in float64, stable log-sum-exp."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    return log_norm - np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]


def check_stage(onnx_path: Path, input_ids: np.ndarray, logits: np.ndarray,
                tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Run the stage's ONNX on `input_ids`; compare with PyTorch's `logits` for them
    (build/export.py's `reference_logits`), or the NLL from them for a loss-head graph."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = {INPUT: input_ids}
    if TARGETS in names:
        targets = targets_for(input_ids)
        feeds[TARGETS] = targets
        ref = reference_nll(logits, targets)
    else:
        ref = logits
    (out,) = session.run([NLL] if TARGETS in names else [LOGITS], feeds)
    diff = out.astype(np.float64) - ref
    result = {
        "rel_err": float(np.linalg.norm(diff) / np.linalg.norm(ref)),
        "max_abs_err": float(np.abs(diff).max()),
        "tolerance": tolerance,
    }
    if not result["rel_err"] <= tolerance:
        raise RunError(
            f"{onnx_path}: differs from the PyTorch model by {result['rel_err']:.3g} relative "
            f"(max abs {result['max_abs_err']:.3g}), above the tolerance {tolerance:g}"
        )
    return result
