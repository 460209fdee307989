"""The prepared data set on disk: Parquet shards of windows and manifest.json.

One row per window (DESIGN.md, Dataset): input_ids fixed_size_list<int32>[L], score_from
int16, n_valid int16, piece int32, window_id int64 (dense, storage order), doc_id int64.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .vocab import file_sha256
from .windows import Window

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def schema(n_ctx: int):
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
    )


@dataclass(frozen=True)
class ShardInfo:
    name: str
    sha256: str
    rows: int
    first_window_id: int
    last_window_id: int


class ShardWriter:
    """Numbers windows densely in the order written and cuts them into shards of `rows_per_shard`."""

    def __init__(self, folder: Path, n_ctx: int, rows_per_shard: int, pad_id: int):
        self.folder, self.n_ctx, self.rows_per_shard, self.pad_id = folder, n_ctx, rows_per_shard, pad_id
        self.shards: list[ShardInfo] = []
        self.windows = self.tokens = self.scored_tokens = 0
        self._pending: list[Window] = []

    def write(self, windows: Iterable[Window]) -> None:
        for window in windows:
            self._pending.append(window)
            if len(self._pending) == self.rows_per_shard:
                self._flush()

    def close(self) -> list[ShardInfo]:
        if self._pending:
            self._flush()
        return self.shards

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self._pending
        self._pending = []
        n = len(rows)
        ids = np.full((n, self.n_ctx), self.pad_id, dtype=np.int32)
        for r, w in enumerate(rows):
            ids[r, : w.n_valid] = w.ids
        n_valid = np.fromiter((w.n_valid for w in rows), dtype=np.int16, count=n)
        score_from = np.fromiter((w.score_from for w in rows), dtype=np.int16, count=n)
        first = self.windows
        table = pa.Table.from_arrays(
            [
                pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1)), self.n_ctx),
                pa.array(score_from),
                pa.array(n_valid),
                pa.array(np.fromiter((w.piece for w in rows), dtype=np.int32, count=n)),
                pa.array(np.arange(first, first + n, dtype=np.int64)),
                pa.array(np.fromiter((w.doc_id for w in rows), dtype=np.int64, count=n)),
            ],
            schema=schema(self.n_ctx),
        )
        name = f"shard-{len(self.shards):05d}.parquet"
        path = self.folder / name
        pq.write_table(table, path)
        self.shards.append(ShardInfo(name, file_sha256(path), n, first, first + n - 1))
        self.windows += n
        self.tokens += int(n_valid.sum(dtype=np.int64))
        self.scored_tokens += int((n_valid.astype(np.int64) - score_from).sum())


def write_manifest(folder: Path, manifest: dict) -> None:
    path = folder / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a finished data set, or None when `folder` holds none."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
