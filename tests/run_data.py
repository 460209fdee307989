"""Tiny models and prepared data sets for the run tests, and the numpy reference of the simulated backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import small_vocab_tokens
from textgen import generate_wiki_corpus

FAKES = Path(__file__).parent / "fakes"


def build_tiny(folder: Path, batch_size: int, seq_len: int) -> Path:
    """A tiny GPT-2 checkpoint (folder/ckpt) built by `npueval build` with the fake atc (folder/build:
    model.om, which holds the ONNX it compiled, and the verified model.onnx)."""
    import os

    from checkpoints import make_checkpoint

    from npueval.build.pipeline import BuildConfig, build

    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{FAKES}{os.pathsep}{old_path}"
    try:
        build(BuildConfig(make_checkpoint(folder / "ckpt"), folder / "build", batch_size=batch_size, seq_len=seq_len,
                          soc="Ascend310P3"))
    finally:
        os.environ["PATH"] = old_path
    return folder


def prepare_data(folder: Path, vocab: Path, target_bytes: int, **kw) -> Path:
    from npueval.eval.data.prepare import PrepareConfig, prepare

    generate_wiki_corpus(folder / "wiki", small_vocab_tokens(), target_bytes, articles_per_file=60)
    kw.setdefault("rows_per_shard", 50)  # several shards, so blocks cross shard boundaries
    prepare(PrepareConfig(corpus_dir=folder / "wiki", vocab=vocab, out=folder / "data", files="all", workers=0, **kw))
    return folder / "data"


def read_shards(data: Path) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables(pq.read_table(path) for path in sorted(data.glob("shard-*.parquet")))
    return {
        "input_ids": np.stack(table.column("input_ids").to_numpy(zero_copy_only=False)).astype(np.int64),
        **{c: table.column(c).to_numpy() for c in ("score_from", "n_valid", "piece", "window_id", "doc_id")},
    }


def simulated_reference(data: Path, keep: np.ndarray | None = None) -> tuple[float, int, np.ndarray]:
    """Σ NLL, scored tokens and per-window sums straight from the shards, with DESIGN.md's function:
    nll of token t = 1 + ((x[t−1]·7919 + x[t]·104729 + (t−1)) mod 9973) / 9973, float32, summed
    in float64 over score_from ≤ t < n_valid. No driver, block or batch code involved."""
    rows = read_shards(data)
    x = rows["input_ids"]
    j = np.arange(x.shape[1] - 1)
    nll = (1 + ((x[:, :-1] * 7919 + x[:, 1:] * 104729 + j) % 9973) / 9973).astype(np.float32).astype(np.float64)
    t = j + 1
    mask = (t >= rows["score_from"][:, None]) & (t < rows["n_valid"][:, None])
    per_window = np.where(mask, nll, 0.0).sum(axis=1)
    keep = np.ones(len(per_window), bool) if keep is None else keep
    return float(np.sum(per_window[keep])), int(mask[keep].sum()), per_window


def synthetic_manifest(shards, n_ctx: int):
    """The manifest of a data set a test wrote with ShardWriter itself (no corpus, no vocabulary)."""
    from npueval.eval.data.manifest import FORMAT_VERSION, DataInputs, DataManifest

    windows = sum(s.rows for s in shards)
    inputs = DataInputs(format_version=FORMAT_VERSION, mode="seed", n_ctx=n_ctx, stride=n_ctx, num_pieces=1,
                        min_length=0, shuffle=False, files_mode="all", skip_bad_lines=False,
                        rows_per_shard=max((s.rows for s in shards), default=1), vocab_sha256="synthetic", files=())
    return DataManifest(inputs=inputs, dataset_key="synthetic", corpus_dir="synthetic", vocab_path="synthetic",
                        vocab_size=0, pad_id=0, articles_total=0, articles_kept=0, articles_dropped=0, bad_lines=0,
                        stream_tokens=0, windows=windows, tokens=0, scored_tokens=0, shards=tuple(shards))
