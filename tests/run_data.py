"""Tiny models and prepared data sets for the run tests, and the numpy reference of the simulated backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from textgen import generate_wiki_corpus
from vocabs import small_vocab_tokens

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FAKES = TESTS / "fakes"


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
    """Σ NLL, scored tokens and per-window sums straight from the shards, with the simulated
    backend's documented function (actors/simulated.py): nll of token t = 1 + ((x[t−1]·7919 +
    x[t]·104729 + (t−1)) mod 9973) / 9973, float32, summed in float64 over score_from ≤ t < n_valid.
    No driver, block or batch code involved."""
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


def results_folder(folder: Path, window_ids, nll_sum, n_scored, **results) -> Path:
    """A results folder of `npueval run` as `report` reads it: results.json (`results` replace its
    keys) and windows.parquet of the windows given."""
    import dataclasses

    import pyarrow as pa
    import pyarrow.parquet as pq

    from npueval.eval.driver.results_file import DeviceRow, Provenance, Results, Speed

    folder.mkdir(parents=True)
    tokens = int(np.sum(n_scored))
    base = Results(
        mean_ce=float(np.sum(nll_sum) / tokens), ppl=float(np.exp(np.sum(nll_sum) / tokens)), seed_ppl=1.5,
        tokens=tokens, windows=len(window_ids), windows_dropped=0, backend="onnx", fallback=None, pipeline=True,
        retries=0, wall_s=10.0, speed=Speed(eval_s=8.0, samples_per_s=4.0, tokens_per_s=2000.0, device_fps_sum=5.0,
                                            host_overhead=0.01),
        per_device=(DeviceRow(node="n" * 12, device="cpu:0", windows=len(window_ids), batches=1, device_s=1.0,
                              fps=5.0),),
        model_manifest_sha256="m", data_manifest_sha256="d", started_at="t0", ended_at="t1", nll_sum=float(
            np.sum(nll_sum)), seed_batches=1, batch_size=4, seq_len=8, limit=None, drop_last=False, blocks=1,
        blocks_resumed=0, vocab_checked=True, model="build", data="data",
        provenance=Provenance(npueval="0", command=("npueval", "run"), python="3", ray="2", onnxruntime="1",
                              ais_bench=None, cann=None, hosts=("h",)),
    )
    (folder / "results.json").write_text(dataclasses.replace(base, **results).dumps())
    pq.write_table(pa.table({"window_id": np.asarray(window_ids, np.int64), "doc_id": np.arange(len(window_ids)),
                             "nll_sum": np.asarray(nll_sum, np.float64), "n_scored": np.asarray(n_scored, np.int64)}),
                   folder / "windows.parquet")
    return folder
