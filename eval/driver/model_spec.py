"""What `run --model` points at, and whether it fits the data set (docs/design.md, "The job, end to end").

A build folder (manifest.json from `npueval build`) says everything: the OM and the verified
ONNX, batch, sequence length, output, the checkpoint's tokenizer sha256 and its folder (which the
torch backends run). A checkpoint folder (config.json and weights) is for the torch backends: its
tokenizer's sha256 and its positions are checked against the data. A bare model file says less:
an ONNX model's shapes are read from it; an OM's only an NPU actor can read. The vocab check then
needs `--vocab`, otherwise results.json says vocab_checked: false.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from npueval.build.manifest import BuildManifest
from npueval.core.errors import UserError, first_line
from npueval.core.files import cached_sha256
from npueval.core.model_io import model_files
from npueval.core.vocab import load_vocab
from npueval.eval.data.manifest import DataManifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    om: Path | None
    onnx: Path | None
    batch_size: int | None  # None: an OM without a manifest (its actor reads it)
    seq_len: int | None
    vocab_size: int | None
    vocab_sha256: str | None
    manifest_sha256: str | None  # of the build manifest, None for a bare file
    identity: str  # what --resume compares: the manifest's sha256, or the model file's
    vocab_source: str = "its build manifest"  # where vocab_sha256 came from, for messages
    checkpoint: Path | None = None  # the checkpoint folder the torch backends run, where it is on this host
    positions: int | None = None  # a checkpoint's longest sequence (its position table)

    @property
    def name(self) -> str:
        return str(self.om or self.onnx or self.checkpoint)

    def file(self, kind: str) -> Path | None:
        """What a backend runs: its table row's `model_file`, "om", "onnx" or "checkpoint"."""
        return {"om": self.om, "onnx": self.onnx, "checkpoint": self.checkpoint}[kind]


def resolve_model(model: str | Path, vocab: str | Path | None = None) -> ModelSpec:
    path = Path(model)
    if path.is_dir() and (path / "config.json").is_file() and not (path / "manifest.json").is_file():
        return _from_checkpoint(path)
    if path.is_dir():
        return _from_build(path)
    if not path.is_file():
        raise UserError(f"--model {path}: no such file or folder; give an `npueval build` folder, a .onnx, an .om "
                        "or (torch backends) a checkpoint folder")
    vocab_sha = vocab_size = None
    if vocab is not None:
        v = load_vocab(vocab)
        vocab_sha, vocab_size = v.sha256, v.size
    identity = _identity(path)
    source = f"--vocab {vocab}"
    if path.suffix == ".om":
        return ModelSpec(path, None, None, None, vocab_size, vocab_sha, None, identity, source)
    if path.suffix != ".onnx":
        raise UserError(f"--model {path}: expected a build folder, a .onnx or an .om file")
    batch, seq_len, model_vocab = _onnx_shapes(path)
    if vocab_size is not None and model_vocab is not None and vocab_size != model_vocab:
        raise UserError(f"--vocab {vocab} has {vocab_size} tokens but --model {path} predicts {model_vocab}")
    return ModelSpec(None, path, batch, seq_len, model_vocab or vocab_size, vocab_sha, None, identity, source)


def _identity(path: Path) -> str:
    """A bare model file's sha256; with external weights, the sha256 of both files' sha256s."""
    shas = [cached_sha256(p) for p in model_files(path)]
    return shas[0] if len(shas) == 1 else hashlib.sha256(":".join(shas).encode()).hexdigest()


def _from_build(folder: Path) -> ModelSpec:
    m, raw = BuildManifest.read(folder)
    onnx = folder / m.onnx
    om = folder / m.om if m.om else None
    for name in m.model_files:
        if not (folder / name).is_file():
            raise UserError(f"--model {folder}: the manifest names {name}, which is missing; run `npueval build` "
                            "again")
    sha = hashlib.sha256(raw).hexdigest()
    # A relative checkpoint is the build folder's neighbour (the bundled sample's); an absolute one
    # of another host is not here.
    checkpoint = folder / m.checkpoint
    return ModelSpec(om, onnx, m.batch_size, m.seq_len, m.vocab_size, m.vocab_sha256, sha,
                     _build_identity(folder, m, sha), checkpoint=checkpoint if checkpoint.is_dir() else None)


def _build_identity(folder: Path, m: BuildManifest, manifest_sha: str) -> str:
    """What --resume compares for a build folder: its manifest's sha256, once its model files are
    checked against the sha256 it records, so that no block of one model is ever summed with
    another's. A manifest of an npueval that recorded none: its sha256 with the files' own."""
    if not m.files:
        shas = [cached_sha256(folder / name) for name in m.model_files]
        return hashlib.sha256(":".join([manifest_sha, *shas]).encode()).hexdigest()
    records = {r.name: r for r in m.files}
    for name in m.model_files:
        record, path = records.get(name), folder / name
        if record is None:
            raise UserError(f"--model {folder}: manifest.json records no sha256 of {name} (edited by hand?); run "
                            "`npueval build` again")
        if path.stat().st_size != record.size or cached_sha256(path) != record.sha256:
            raise UserError(f"--model {folder}: {name} is not the file `npueval build` wrote there (its sha256 is not "
                            "the one manifest.json records: replaced or changed since); run `npueval build` again, "
                            "or put back the file it built")
    return manifest_sha


def _from_checkpoint(folder: Path) -> ModelSpec:
    """A checkpoint folder, for the torch backends: any batch, up to its positions; identity = its
    weights and config."""
    import json

    from npueval.core.checkpoint import open_checkpoint

    ckpt = open_checkpoint(folder)
    identity = hashlib.sha256(f"{ckpt.weights_sha256}:{json.dumps(ckpt.config, sort_keys=True)}".encode()).hexdigest()
    return ModelSpec(None, None, None, None, int(ckpt.config["vocab_size"]), ckpt.tokenizer.sha256, None, identity,
                     f"the checkpoint's {ckpt.tokenizer.path.name}", checkpoint=folder, positions=ckpt.positions)


def check_reference(path: Path, model: ModelSpec | None, n_ctx: int, data_dir: Path) -> None:
    """Refuse a --check-against model that cannot take the data's windows, or predicts another
    vocabulary than the model's, before any device work: its check would fail on every device."""
    _, seq_len, vocab = _onnx_shapes(path, "--check-against")
    if seq_len != n_ctx:
        raise UserError(f"--check-against {path} takes sequences of {seq_len} tokens but --data {data_dir} holds "
                        f"windows of {n_ctx}: give the ONNX of the model being evaluated (its build folder's "
                        "model.onnx)")
    if vocab is not None and model is not None and model.vocab_size is not None and vocab != model.vocab_size:
        raise UserError(f"--check-against {path} predicts {vocab} tokens but --model {model.name} {model.vocab_size}: "
                        "give the ONNX of the model being evaluated")


def _onnx_shapes(path: Path, flag: str = "--model") -> tuple[int, int, int | None]:
    """(batch, seq_len, vocab size when the output is logits) of a static-shape ONNX model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types
        raise UserError(f"{flag} {path}: onnxruntime cannot load it ({first_line(exc)})") from None
    inputs = {i.name: i.shape for i in session.get_inputs()}
    shape = inputs.get("input_ids")
    if shape is None or len(shape) != 2 or not all(isinstance(d, int) for d in shape):
        raise UserError(f"{flag} {path}: needs a static (batch, length) input named input_ids, has {inputs}")
    out = session.get_outputs()[0].shape
    vocab = out[2] if "targets" not in inputs and len(out) == 3 and isinstance(out[2], int) else None
    return shape[0], shape[1], vocab


def check_pair(model: ModelSpec, data_manifest: DataManifest, data_dir: Path) -> bool:
    """Refuse a model/data pair whose vocab or sequence length differ; True when the vocab was checked."""
    n_ctx = data_manifest.n_ctx
    if model.positions is not None and n_ctx > model.positions:
        raise UserError(f"--model {model.name} takes at most {model.positions} positions but --data {data_dir} holds "
                        f"windows of {n_ctx}: prepare the data with --n-ctx {model.positions} or less")
    if model.seq_len is not None and model.seq_len != n_ctx:
        raise UserError(
            f"--model {model.name} takes sequences of {model.seq_len} tokens but --data {data_dir} holds windows of "
            f"{n_ctx}: build the model with --seq-len {n_ctx} or prepare the data with --n-ctx {model.seq_len}"
        )
    if model.vocab_sha256 is None:
        log.warning("the model's vocabulary is unknown (a bare model file without --vocab): not checked against the "
                    "data")
        return False
    if model.vocab_sha256 != data_manifest.vocab_sha256:
        raise UserError(
            f"--model {model.name}: the vocab of {model.vocab_source} has sha256 {model.vocab_sha256[:12]}… "
            f"but --data {data_dir} was "
            f"tokenized with {data_manifest.vocab_sha256[:12]}… ({data_manifest.vocab_path}): "
            "prepare the data with the checkpoint's vocab.txt"
        )
    return True
