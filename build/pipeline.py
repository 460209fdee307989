"""`npueval build`: checkpoint → verified ONNX → NPU graph with the loss inside → OM.

The checkpoint is GPT2-Chinese or a Llama, Qwen2 or Mistral family model (core/families.py);
its tokenizer file is copied into DIR and its sha256 recorded.

Stages (each writes its file into DIR and an entry into DIR/manifest.json):
1 export, 2 simplify, 3 NPU graph passes, 4 loss head (or the logits kept), 5 verification
after every stage, 6 ATC (or atc.sh without CANN), 7 the manifest, which `npueval run`
reads to know how to feed the model.

A model whose weights are over protobuf's limit (build/onnx_files.py) keeps them in a file beside
each stage, and each stage holds them whole: four copies, 112 GB for a Llama-7B in float32. Its
earlier stages are removed once the next one is verified, unless `keep_stages`, so that the folder
holds at most two copies while it builds and one at the end. (A stage cannot share its source's
weights file: onnx refuses weights behind a hard or symbolic link.)
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from npueval.core.checkpoint import Checkpoint, load_model, open_checkpoint
from npueval.core.errors import UserError
from npueval.core.files import WRITE_ERRNOS, cached_sha256, output_lock
from npueval.core.model_io import INPUT, LOGITS, NLL, TARGETS, weights_file
from npueval.core.tokenizer_file import TOKENIZER_CONFIG, TOKENIZER_JSON

from . import atc, onnx_files
from .export import export_onnx, op_histogram, reference_logits
from .loss_head import add_loss_head
from .manifest import FORMAT_VERSION, OUTPUTS, BuildManifest, FileRecord, TensorSpec
from .passes import run_passes
from .precision import fp32_nodes
from .simplify import simplify
from .verify import DEFAULT_TOLERANCE, check_stage, random_ids

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class BuildConfig:
    checkpoint: Path
    out: Path
    batch_size: int = 4
    seq_len: int = 512
    output: str = "nll"
    soc: str = "auto"
    tolerance: float = DEFAULT_TOLERANCE
    keep_stages: bool = False  # keep every stage of a model over the limit (by default only model.onnx)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        object.__setattr__(self, "out", Path(self.out))
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.seq_len < 2:
            raise UserError(f"--seq-len {self.seq_len}: must be at least 2")
        if self.output not in OUTPUTS:
            raise UserError(f"--output {self.output!r}: choose one of {', '.join(OUTPUTS)}")
        if not self.tolerance > 0:
            raise UserError(f"--tolerance {self.tolerance}: must be a positive relative error")
        atc.check_soc(self.soc)


@dataclass(frozen=True)
class BuildResult:
    out: Path
    manifest: BuildManifest = field(repr=False)
    om: Path | None  # None when there was no CANN: DIR/atc.sh holds the command


def build(config: BuildConfig) -> BuildResult:
    ckpt = open_checkpoint(config.checkpoint)
    if config.seq_len > ckpt.positions:
        raise UserError(f"--seq-len {config.seq_len}: the model has only {ckpt.positions} positions")
    out = config.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; name a folder")
    made = not out.exists()
    try:
        with output_lock(out):  # two builds into one folder would mix their stages
            return _build(config, ckpt, out)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        if made:  # nothing of this build is worth keeping, and the space it took is wanted back
            shutil.rmtree(out, ignore_errors=True)
        room = ("" if exc.errno == errno.EROFS else "free some space (a build holds up to four copies of the "
                "model's float32 weights, two of one over 1.9 GB), or ")
        raise UserError(f"--out {out}: cannot write the build ({os.strerror(exc.errno)}); {room}choose another "
                        "--out") from None


def _build(config: BuildConfig, ckpt: Checkpoint, out: Path) -> BuildResult:
    model = load_model(ckpt)  # a corrupt checkpoint is refused before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot make the folder ({exc.strerror or exc}); choose another --out") from None
    ids = random_ids(config.batch_size, config.seq_len, ckpt.config["vocab_size"])
    reference = reference_logits(model, ids)
    stages: dict[str, dict] = {}

    def verified(name: str, info: dict) -> dict:
        info["verify"] = check_stage(out / info["file"], ids, reference, config.tolerance)
        log.info("stage %s: %s, rel err %.2g", name, info["file"], info["verify"]["rel_err"])
        if stages and not config.keep_stages:
            _drop_if_external(out, stages[list(stages)[-1]])
        stages[name] = info
        return info

    port = ckpt.family.port_export
    export = export_onnx(model, out / "1-export.onnx", config.seq_len, port=port, batch_size=config.batch_size)
    del model  # its weights are in the export now, and `reference` holds its answer: a copy less in memory
    verified("export", export)
    verified("simplify", simplify(out / "1-export.onnx", out / "2-simplified.onnx", config.batch_size, config.seq_len,
                                  slice_free=port))
    if config.output == "nll":
        verified("passes", _passes(out / "2-simplified.onnx", out / "3-npu.onnx"))
        final = verified("loss_head", add_loss_head(out / "3-npu.onnx", out / "model.onnx"))["file"]
    else:
        final = verified("passes", _passes(out / "2-simplified.onnx", out / "model.onnx"))["file"]

    inputs = {INPUT: [config.batch_size, config.seq_len]}
    if config.output == "nll":
        inputs[TARGETS] = [config.batch_size, config.seq_len]
    output_shape = [config.batch_size, config.seq_len] + ([] if config.output == "nll" else [ckpt.config["vocab_size"]])
    keep = fp32_nodes(out / final, loss_head=config.output == "nll")
    keep_dtype = atc.write_inputs(out, tuple(name for names in keep.values() for name in names))
    om, atc_info = _compile(out, final, inputs, keep_dtype, config.soc)
    atc_info["keep_fp32"] = {part: len(names) for part, names in keep.items()}
    tokenizer = _copy_tokenizer(ckpt, out)
    onnx_weights = weights_file(out / final).name if weights_file(out / final).is_file() else None

    # `files`: what run checks the model files against, hashed here once (and cached: the first
    # run does not read them again).
    manifest = BuildManifest(
        format_version=FORMAT_VERSION,
        checkpoint=str(ckpt.folder.resolve()),
        weights_sha256=ckpt.weights_sha256,
        vocab_sha256=ckpt.tokenizer.sha256,
        config=ckpt.config,
        batch_size=config.batch_size,
        seq_len=config.seq_len,
        output=config.output,
        inputs=tuple(TensorSpec(k, "int64", tuple(v)) for k, v in inputs.items()),
        outputs=(TensorSpec(NLL if config.output == "nll" else LOGITS, "float32", tuple(output_shape)),),
        opset=export["opset"],
        exporter=export["exporter"],
        onnx=final,
        om=om.name if om else None,
        tolerance=config.tolerance,
        tolerance_loosened=config.tolerance > DEFAULT_TOLERANCE,
        stages=stages,
        atc=atc_info,
        family=ckpt.family.model_type,
        tokenizer=tokenizer,
        onnx_weights=onnx_weights,
        files=tuple(FileRecord(name, cached_sha256(out / name), (out / name).stat().st_size)
                    for name in (final, onnx_weights, om.name if om else None) if name),
    )
    manifest.write(out)
    return BuildResult(out, manifest, om)


def _drop_if_external(out: Path, stage: dict) -> None:
    """Remove a stage that the next one has replaced, where it holds its weights in a file beside
    it; its manifest entry says so."""
    path = out / stage["file"]
    weights = weights_file(path)
    if not weights.is_file():
        return
    log.info("removing %s and %s (%.2f GB): the next stage is verified (--keep-stages keeps them)",
             path.name, weights.name, weights.stat().st_size / 1e9)
    weights.unlink()
    path.unlink()
    stage["removed"] = True


def _copy_tokenizer(ckpt: Checkpoint, out: Path) -> str:
    """The model's tokenizer file (and tokenizer_config.json beside a tokenizer.json) into the build
    folder, so that `npueval prepare --tokenizer DIR` tokenizes with what the model was built with."""
    names = [ckpt.tokenizer.path.name]
    if ckpt.tokenizer.kind == TOKENIZER_JSON and (ckpt.folder / TOKENIZER_CONFIG).is_file():
        names.append(TOKENIZER_CONFIG)
    for name in names:
        shutil.copyfile(ckpt.folder / name, out / name)
    return ckpt.tokenizer.path.name


def _passes(src: Path, dst: Path) -> dict:
    model, counts = run_passes(onnx_files.load(src))
    onnx_files.save(model, dst)
    return {"file": dst.name, "counts": counts, "ops_after": op_histogram(dst)}


def _compile(out: Path, onnx_file: str, inputs: dict, keep_dtype: str | None, soc: str) -> tuple[Path | None, dict]:
    """Run ATC where CANN is; else write atc.sh. Either way atc.sh holds the command."""
    found = atc.find_atc()
    script_soc = soc if soc != "auto" else "Ascend${chip}"
    args = atc.atc_args(onnx_file, "model", script_soc, inputs, keep_dtype)
    script = atc.write_script(out, args, soc_given=soc != "auto")
    info = {"script": script.name, "found": None, "argv": ["atc", *args], "result": None}
    if found is None:
        log.warning(
            "no CANN here (no atc on PATH, no $ASCEND_TOOLKIT_HOME, no set_env.sh): the verified ONNX is %s; "
            "compile it on an NPU host with %s", out / onnx_file, script,
        )
        info["result"] = "no CANN: run atc.sh on a host with CANN"
        return None, info
    prefix, where = found
    if soc == "auto":
        from npueval.cluster.devices import soc_version

        soc = soc_version()
    args = atc.atc_args(onnx_file, "model", soc, inputs, keep_dtype)
    info.update(found=where, argv=["atc", *args])
    info.update(atc.run_atc(prefix, args, out))
    om = out / "model.om"
    if not om.is_file():
        raise UserError(f"atc reported success but wrote no {om}; see {out / 'atc.log'}")
    info["result"] = "ok"
    return om, info
