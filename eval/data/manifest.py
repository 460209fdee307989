"""A prepared data set's manifest.json: what `npueval prepare` made, from what, and its shards
(docs/results.md, "The data set").

Its first keys are the inputs, everything that decides the windows: equal inputs give equal
shards, and `dataset_key` is their sha256, by which `prepare` finds a data set already made and
`run --resume` knows it evaluates the same windows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from npueval.core.contracts import FLATTEN, ContractError, check_format_version, from_json, to_json
from npueval.core.files import atomic_write

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CorpusFileEntry:
    path: str  # relative to the corpus folder
    sha256: str
    lines: int


@dataclass(frozen=True)
class ShardEntry:
    name: str  # a file name in the data folder
    sha256: str
    rows: int
    first_window_id: int
    last_window_id: int


#: DataInputs fields that a data set of format 1 made from wiki_zh with a vocab.txt did not have.
_ADDED = ("corpus_format", "text_field", "bos_id", "eos_id")


@dataclass(frozen=True)
class DataInputs:
    format_version: int
    mode: str  # seed | sliding | rolling | stride
    n_ctx: int
    stride: int
    num_pieces: int
    min_length: int
    shuffle: bool
    files_mode: str  # first | all
    skip_bad_lines: bool
    rows_per_shard: int
    vocab_sha256: str  # of the tokenizer file: vocab.txt or tokenizer.json
    files: tuple[CorpusFileEntry, ...]
    # Since GPT2-Chinese's wiki_zh alone: how the corpus is read and each document framed.
    corpus_format: str = "wiki_zh"  # wiki_zh | jsonl | text | parquet
    text_field: str = "text"
    bos_id: int | None = None  # tokenizer.json: before each document (vocab.txt: [MASK], the port's)
    eos_id: int | None = None  # … after it ([CLS])

    def key(self) -> str:
        """The data set's identity: the sha256 of the inputs as canonical JSON. The fields added
        since GPT2-Chinese's wiki_zh alone count only where they differ from their defaults, so
        that a data set made before keeps its key."""
        obj = to_json(self)
        for f in dataclasses.fields(self):
            if f.name in _ADDED and obj[f.name] == f.default:
                del obj[f.name]
        return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()



@dataclass(frozen=True)
class DataManifest:
    inputs: DataInputs = field(metadata=FLATTEN)
    dataset_key: str
    corpus_dir: str
    vocab_path: str
    vocab_size: int
    pad_id: int
    articles_total: int
    articles_kept: int
    articles_dropped: int
    bad_lines: int
    stream_tokens: int
    windows: int
    tokens: int
    scored_tokens: int
    shards: tuple[ShardEntry, ...]
    scored_bytes: int | None = None  # UTF-8 bytes of the scored tokens' text (tokenizer.json); None: not recorded
    scored_words: int | None = None  # rolling mode: lm-eval's words of the documents; None: not recorded

    @property
    def n_ctx(self) -> int:
        return self.inputs.n_ctx

    @property
    def mode(self) -> str:
        return self.inputs.mode

    @property
    def vocab_sha256(self) -> str:
        return self.inputs.vocab_sha256

    def to_json(self) -> dict:
        return to_json(self)

    @classmethod
    def from_json(cls, obj) -> DataManifest:
        check_format_version(obj, FORMAT_VERSION)
        return from_json(cls, obj)

    def write(self, folder: Path) -> None:
        atomic_write(folder / MANIFEST, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")


    @classmethod
    def read(cls, folder: Path) -> DataManifest | None:
        """The manifest of the data set in `folder`, or None where there is none, or none that reads."""
        try:
            return cls.from_json(read_json(folder))
        except ContractError:
            return None


def read_json(folder: Path):
    """The parsed manifest.json of `folder`, or None where there is none or it is not JSON."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
