"""A build folder's manifest.json: what `npueval build` made and how `npueval run` feeds it
(docs/results.md, "The build folder").

The fields `run` reads are typed (the model files and their sha256, the static shape, the output
kind, the vocabulary's sha256, the checkpoint's config for its vocabulary size); `stages` (each
stage's file, errors against PyTorch, op histograms, pass counts) and `atc` (the command and its
result) are the build's record, kept as they were written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from npueval.core.contracts import ContractError, NewerFormat, check_format_version, from_json, to_json
from npueval.core.errors import UserError
from npueval.core.files import atomic_write

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
OUTPUTS = ("nll", "logits")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class FileRecord:
    """A model file of the build folder as `npueval build` wrote it."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class BuildManifest:
    format_version: int
    checkpoint: str  # the checkpoint folder, absolute
    weights_sha256: str
    vocab_sha256: str  # of the model's tokenizer file (vocab.txt or tokenizer.json)
    config: dict  # the checkpoint's config.json, as loaded
    batch_size: int
    seq_len: int
    output: str  # nll | logits
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int
    exporter: str
    onnx: str  # file names in the build folder
    om: str | None  # None: no CANN where it was built; atc.sh holds the command
    tolerance: float
    tolerance_loosened: bool
    stages: dict
    atc: dict
    family: str = "gpt2"  # config.json's model_type (core/families.py)
    tokenizer: str = "vocab.txt"  # the tokenizer file in the build folder, whose sha256 is vocab_sha256
    onnx_weights: str | None = None  # the ONNX model's external weights file (over 2 GiB), else None
    # model.onnx, its weights file and model.om as written; () in manifests of npueval before it
    files: tuple[FileRecord, ...] = ()

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def model_files(self) -> tuple[str, ...]:
        """The files of the build folder that a backend runs: the ONNX, its weights, the OM."""
        return tuple(name for name in (self.onnx, self.onnx_weights, self.om) if name)

    def to_json(self) -> dict:
        return to_json(self)

    def write(self, folder: Path) -> None:
        atomic_write(folder / MANIFEST, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path, flag: str = "--model") -> tuple[BuildManifest, bytes]:
        """The manifest of the build in `folder` and its bytes (whose sha256 is the build's
        identity), or a one-line error naming the folder or the field."""
        path = folder / MANIFEST
        try:
            raw = path.read_bytes()
            obj = json.loads(raw)
            check_format_version(obj, FORMAT_VERSION)
            manifest = from_json(cls, obj)
        except FileNotFoundError:
            raise UserError(f"{flag} {folder}: no manifest.json; point it at an `npueval build` folder or a model "
                            "file") from None
        except NewerFormat as exc:
            raise UserError(f"{flag} {path}: {exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, ContractError) as exc:
            raise UserError(f"{flag} {path}: not a build manifest ({exc}); run `npueval build` again") from None
        if manifest.output not in OUTPUTS or not isinstance(manifest.config.get("vocab_size"), int):
            raise UserError(f"{flag} {path}: not a build manifest (output {manifest.output!r}, config.vocab_size "
                            f"{manifest.config.get('vocab_size')!r}); run `npueval build` again")
        return manifest, raw
