"""ONNX files of any size, as every build stage writes them.

protobuf refuses a message over 2 GiB, and a float32 model passes that at about 500M parameters
(Qwen2-0.5B with its 151,936-token head; a Llama-7B is 28 GB). Up to `INLINE_LIMIT` bytes of
weights a stage's file holds them, as the port's files do; above it they go to one file beside it,
`<file>.data` (core/model_io.py's `weights_file`), which onnxruntime, onnx and ATC's ONNX parser
read from the model's folder. The checker reads the file, never the in-memory model, so that it
takes either kind.
"""

from __future__ import annotations

import logging
from pathlib import Path

from npueval.core.model_io import weights_file

log = logging.getLogger(__name__)

#: Bytes of weights kept inside the .onnx file: protobuf's 2 GiB less room for the graph itself.
INLINE_LIMIT = 1_900_000_000
#: Tensors below this size stay in the .onnx file even when the weights go outside.
EXTERNAL_MIN_BYTES = 1024


def weight_bytes(model) -> int:
    """The bytes of the model's initializers (raw_data, or the typed fields torch never uses)."""
    return sum(len(t.raw_data) if t.raw_data else t.ByteSize() for t in model.graph.initializer)


def too_big_inline(model) -> bool:
    return weight_bytes(model) > INLINE_LIMIT


def save(model, path: Path) -> None:
    """Write `model` to `path`, its weights inside or in `<path>.data`, and check the file.

    Saving outside moves the weights out of the in-memory model: load the file to use it again."""
    import onnx

    weights = weights_file(path)
    weights.unlink(missing_ok=True)  # onnx appends to a weights file that is there
    if too_big_inline(model):
        log.info("%s: %.2f GB of weights, over protobuf's limit: they go to %s", path.name,
                 weight_bytes(model) / 1e9, weights.name)
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=weights.name, size_threshold=EXTERNAL_MIN_BYTES)
    else:
        onnx.save(model, str(path))
    onnx.checker.check_model(str(path))


def load(path: Path):
    """The model with its weights, wherever they are."""
    import onnx

    return onnx.load(str(path))
