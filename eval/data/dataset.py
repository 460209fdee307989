"""The prepared data set on disk: Parquet shards of windows, and its manifest (manifest.py).

One row per window (docs/results.md, "The data set"): input_ids fixed_size_list<int32>[L],
score_from int16, n_valid int16, piece int32, window_id int64 (dense, storage order), doc_id int64,
and where the tokenizer gives them (a tokenizer.json), scored_bytes int64; in rolling mode
scored_words int64.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from npueval.core.contracts import ContractError, NewerFormat
from npueval.core.errors import DatasetError, first_line, not_a_folder
from npueval.core.files import file_sha256

from .manifest import MANIFEST, DataManifest, ShardEntry, read_json
from .windows import Windows

#: How shards are written. Token ids as BYTE_STREAM_SPLIT + zstd level 1 (Parquet 2.11, pyarrow
#: 17): written 27% faster than pyarrow's default dictionary + snappy, 10% smaller, read as
#: fast (BENCHMARKS.md, "`npueval prepare`"). window_id counts up by one: delta-encoded.
#: No min/max statistics: nothing reads shards by predicate, and they cost write time.
SHARD_ENCODING = dict(
    use_dictionary=["score_from", "n_valid", "piece", "doc_id"],
    column_encoding={"input_ids.list.element": "BYTE_STREAM_SPLIT", "window_id": "DELTA_BINARY_PACKED"},
    compression="zstd",
    compression_level=1,
    write_statistics=False,
)


def schema(n_ctx: int, with_bytes: bool = False, with_words: bool = False):
    import pyarrow as pa

    return pa.schema(
        [
            ("input_ids", pa.list_(pa.int32(), n_ctx)),
            ("score_from", pa.int16()),
            ("n_valid", pa.int16()),
            ("piece", pa.int32()),
            ("window_id", pa.int64()),
            ("doc_id", pa.int64()),
        ]
        + ([("scored_bytes", pa.int64())] if with_bytes else [])
        + ([("scored_words", pa.int64())] if with_words else [])
    )


class ShardWriter:
    """Numbers windows densely in the order written and cuts them into shards of `rows_per_shard`."""

    def __init__(self, folder: Path, n_ctx: int, rows_per_shard: int):
        self.folder, self.n_ctx, self.rows_per_shard = folder, n_ctx, rows_per_shard
        self.shards: list[ShardEntry] = []
        self.windows = self.tokens = self.scored_tokens = 0
        self.scored_bytes: int | None = None  # Σ over the windows, where they carry bytes
        self.scored_words: int | None = None  # … and words
        self._pending: list[tuple[Windows, np.ndarray]] = []  # (block, its piece per row)
        self._pending_rows = 0

    def write(self, blocks: Iterable[Windows]) -> None:
        for block in blocks:
            if len(block) == 0:
                continue
            self._pending.append((block, np.full(len(block), block.piece, dtype=np.int32)))
            self._pending_rows += len(block)
            while self._pending_rows >= self.rows_per_shard:
                self._flush(self.rows_per_shard)

    def close(self) -> list[ShardEntry]:
        if self._pending_rows:
            self._flush(self._pending_rows)
        return self.shards

    def _flush(self, rows: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        ids = np.concatenate([b.ids for b, _ in self._pending])
        n_valid = np.concatenate([b.n_valid for b, _ in self._pending])
        score_from = np.concatenate([b.score_from for b, _ in self._pending])
        piece = np.concatenate([p for _, p in self._pending])
        doc_id = np.concatenate([b.doc_id for b, _ in self._pending])
        with_bytes = self._pending[0][0].scored_bytes is not None
        nbytes = np.concatenate([b.scored_bytes for b, _ in self._pending]) if with_bytes else None
        with_words = self._pending[0][0].scored_words is not None
        words = np.concatenate([b.scored_words for b, _ in self._pending]) if with_words else None
        rest = Windows(-1, ids[rows:], n_valid[rows:], score_from[rows:], doc_id[rows:],
                       nbytes[rows:] if with_bytes else None, words[rows:] if with_words else None)
        self._pending = [(rest, piece[rows:])] if len(rest) else []
        self._pending_rows = len(rest)

        first = self.windows
        table = pa.Table.from_arrays(
            [
                pa.FixedSizeListArray.from_arrays(_arrow(ids[:rows].reshape(-1)), self.n_ctx),
                _arrow(score_from[:rows].astype(np.int16)),
                _arrow(n_valid[:rows].astype(np.int16)),
                _arrow(piece[:rows]),
                _arrow(np.arange(first, first + rows, dtype=np.int64)),
                _arrow(doc_id[:rows]),
            ]
            + ([_arrow(nbytes[:rows])] if with_bytes else [])
            + ([_arrow(words[:rows])] if with_words else []),
            schema=schema(self.n_ctx, with_bytes, with_words),
        )
        name = f"shard-{len(self.shards):05d}.parquet"
        path = self.folder / name
        pq.write_table(table, path, **SHARD_ENCODING)
        self.shards.append(ShardEntry(name, file_sha256(path), rows, first, first + rows - 1))
        self.windows += rows
        self.tokens += int(n_valid[:rows].sum())
        self.scored_tokens += int((n_valid[:rows] - score_from[:rows]).sum())
        if with_bytes:
            self.scored_bytes = (self.scored_bytes or 0) + int(nbytes[:rows].sum())
        if with_words:
            self.scored_words = (self.scored_words or 0) + int(words[:rows].sum())


def _arrow(values: np.ndarray):
    """A numpy array as an Arrow array, zero-copy. Not `pa.array`: it imports pandas, when
    installed, to check its argument (0.4 s of start-up on this machine)."""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def read_shard(data_dir: Path, shard: ShardEntry, columns: list[str], verify: bool = False):
    """One shard of a data set as a pyarrow Table, named in every error.

    The name comes from manifest.json, so it must be a plain file name in DATA_DIR (a manifest
    edited to point elsewhere is refused). With `verify`, the file's sha256 must be the one the
    manifest recorded: a truncated, corrupted or replaced shard is named, not read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = shard.name
    if not name or Path(name).name != name or name in (".", ".."):
        raise DatasetError(f"{data_dir / MANIFEST}: shard name {name!r} is not a file name in the data folder; "
                           "the manifest was edited: prepare the data set again")
    path = data_dir / name
    if not path.is_file():
        raise DatasetError(f"{path}: missing, but {data_dir / MANIFEST} lists it; prepare the data set again")
    if verify and file_sha256(path) != shard.sha256:
        raise DatasetError(f"{path}: its sha256 is not the one {data_dir / MANIFEST} records (the shard or the "
                           "manifest changed after `npueval prepare`: truncated, corrupted or edited); "
                           "prepare the data set again")
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{path}: not a readable Parquet shard ({first_line(exc) or type(exc).__name__}); prepare "
                           "the data set again") from None


def open_data_set(data_dir: Path, flag: str = "--data") -> DataManifest:
    """The manifest of the data set `npueval prepare` made in DATA_DIR, or a one-line error
    naming the folder: missing, unfinished, without a window, or a manifest that is unreadable
    or was edited (naming the field)."""
    if not data_dir.is_dir():
        raise DatasetError(f"{flag} {data_dir}: {not_a_folder(data_dir)}; make it with `npueval prepare`")
    if not (data_dir / MANIFEST).is_file():
        raise DatasetError(f"{flag} {data_dir}: no finished data set (manifest.json missing); run `npueval prepare`")
    try:
        m = DataManifest.from_json(read_json(data_dir))
    except NewerFormat as exc:
        raise DatasetError(f"{data_dir / MANIFEST}: {exc}") from None
    except ContractError as exc:
        raise DatasetError(f"{data_dir / MANIFEST}: not the manifest of an `npueval prepare` data set (unreadable "
                           f"JSON, or edited: {exc}); prepare the data set again") from None
    if not sum(s.rows for s in m.shards):
        raise DatasetError(f"{flag} {data_dir}: the data set holds no window (articles kept: {m.articles_kept} "
                           f"of {m.articles_total}; mode {m.mode}, n_ctx {m.n_ctx}); prepare it again "
                           "from more text, or with a smaller --n-ctx or --min-length")
    return m
