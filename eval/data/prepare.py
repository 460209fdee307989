"""`npueval prepare`: a wiki_zh corpus → tokenized windows in Parquet shards + manifest.json.

Follows docs/design.md, "The port's protocol", steps 1–9 (get_data_json.py, pre_data.py and compare_loss.py's
windows), streaming: articles are read, tokenized in batches and cut into windows as they
come, so memory does not grow with the corpus (with --shuffle it holds one piece's windows,
since the port shuffles each piece as a whole).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npueval.core.errors import CorpusError, DatasetError, UserError
from npueval.core.vocab import Vocab, load_vocab

from .batches import BAD, KEPT, FramedBatch, batch_framer
from .corpus import FILES_CHOICES, CorpusFile, LineRange, bad_line_error, iter_line_ranges, scan_files, select_files
from .dataset import ShardWriter
from .manifest import FORMAT_VERSION, CorpusFileEntry, DataInputs, DataManifest
from .windows import MODES, WindowMaker, Windows

log = logging.getLogger(__name__)

#: The tokenizing workers get the files in ranges of about this many bytes.
BATCH_BYTES = 1 << 20
ProgressFn = Callable[[int, int], None]  # (bytes done so far, bytes in all)


@dataclass(frozen=True)
class PrepareConfig:
    corpus_dir: Path
    vocab: Path
    out: Path
    mode: str = "seed"
    files: str = "first"
    n_ctx: int = 512
    stride: int | None = None  # seed: 768; sliding: n_ctx // 2
    num_pieces: int = 100
    min_length: int = 128
    shuffle: bool = False
    rows_per_shard: int = 4096
    skip_bad_lines: bool = False
    force: bool = False
    workers: int | None = None  # tokenizing processes; 0: this process; None: one per CPU

    def __post_init__(self) -> None:
        for name in ("corpus_dir", "vocab", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.mode not in MODES:
            raise UserError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.files not in FILES_CHOICES:
            raise UserError(f"--files {self.files!r}: choose one of {', '.join(FILES_CHOICES)}")
        if not 2 <= self.n_ctx <= 32767:
            raise UserError(f"--n-ctx {self.n_ctx}: must be between 2 and 32767")
        if self.stride is None:
            object.__setattr__(self, "stride", 768 if self.mode == "seed" else self.n_ctx // 2)
        if self.stride < 1:
            raise UserError(f"--stride {self.stride}: must be at least 1")
        if self.mode == "sliding" and self.stride >= self.n_ctx:
            raise UserError(
                f"--stride {self.stride}: in sliding mode it must be less than --n-ctx "
                f"{self.n_ctx}, so that every window but the first has context for its first "
                "scored token"
            )
        if self.num_pieces < 1:
            raise UserError(f"--num-pieces {self.num_pieces}: must be at least 1")
        if self.min_length < 0:
            raise UserError(f"--min-length {self.min_length}: must be 0 or more")
        if self.rows_per_shard < 1:
            raise UserError(f"--rows-per-shard {self.rows_per_shard}: must be at least 1")
        if self.workers is None:
            object.__setattr__(self, "workers", os.cpu_count() or 1)
        if self.workers < 0:
            raise UserError(f"--workers {self.workers}: must be 0 (tokenize in this process) or more")
        if self.shuffle and self.mode != "seed":
            raise UserError("--shuffle reproduces the port's seed protocol: use it with --mode seed")


@dataclass(frozen=True)
class PrepareResult:
    out: Path
    manifest: DataManifest = field(repr=False)
    reused: bool  # True when `out` already held this data set and nothing was done


def prepare(config: PrepareConfig, progress: ProgressFn | None = None) -> PrepareResult:
    if config.out.exists() and not config.out.is_dir():
        raise DatasetError(f"--out {config.out} is a file; name a folder")
    vocab = load_vocab(config.vocab)
    files = scan_files(config.corpus_dir, select_files(config.corpus_dir, config.files))
    inputs = _inputs(config, files, vocab)
    key = inputs.key()

    existing = DataManifest.read(config.out) if config.out.is_dir() else None
    if existing is not None and existing.dataset_key == key:
        log.info("%s already holds this data set (%d windows); nothing to do", config.out, existing.windows)
        return PrepareResult(config.out, existing, reused=True)
    if config.out.exists() and not config.force and not _is_empty_dir(config.out):
        what = "another data set" if existing is not None else "files that are not an npueval data set"
        raise DatasetError(
            f"--out {config.out}: holds {what}; choose another folder or pass --force to replace it"
        )

    partial = config.out.parent / f".{config.out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
    except OSError as exc:
        raise DatasetError(f"--out {config.out}: cannot make the folder ({exc.strerror or exc}); "
                           "choose another --out") from None
    try:
        manifest = _build(config, files, vocab, inputs, key, partial, progress)
        if not manifest.windows:  # `run` would refuse it: say so now, and leave --out as it was
            raise DatasetError(
                f"CORPUS_DIR {config.corpus_dir}: not one window could be made (articles kept: "
                f"{manifest.articles_kept} of {manifest.articles_total}, mode {config.mode}, n_ctx "
                f"{config.n_ctx}); give it more text, or pass a smaller --n-ctx or --min-length")
        manifest.write(partial)
        _publish(partial, config.out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info(
        "prepared %d windows (%d scored tokens) from %d of %d articles into %s",
        manifest.windows,
        manifest.scored_tokens,
        manifest.articles_kept,
        manifest.articles_total,
        config.out,
    )
    return PrepareResult(config.out, manifest, reused=False)


def _inputs(config: PrepareConfig, files: list[CorpusFile], vocab: Vocab) -> DataInputs:
    """Everything that decides the data set's content: equal inputs, equal shards."""
    return DataInputs(
        format_version=FORMAT_VERSION, mode=config.mode, n_ctx=config.n_ctx, stride=config.stride,
        num_pieces=config.num_pieces, min_length=config.min_length, shuffle=config.shuffle, files_mode=config.files,
        skip_bad_lines=config.skip_bad_lines, rows_per_shard=config.rows_per_shard, vocab_sha256=vocab.sha256,
        files=tuple(CorpusFileEntry(f.rel, f.sha256, f.lines) for f in files),
    )


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _publish(partial: Path, out: Path) -> None:
    """Put the finished folder in place in one rename; an old one is removed only after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(partial, out)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def _build(
    config: PrepareConfig,
    files: list[CorpusFile],
    vocab: Vocab,
    inputs: DataInputs,
    key: str,
    folder: Path,
    progress: ProgressFn | None,
) -> DataManifest:
    total_bytes = sum(f.size for f in files)
    done = [0]

    def on_bytes(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total_bytes)

    stats = {"articles_total": sum(f.articles for f in files), "articles_kept": 0, "articles_dropped": 0,
             "bad_lines": 0, "stream_tokens": 0}
    pad_id = vocab.token_to_id.get("[PAD]", 0)
    writer = ShardWriter(folder, config.n_ctx, config.rows_per_shard)
    maker = WindowMaker(config.mode, config.n_ctx, config.stride, pad_id)

    with batch_framer(config.vocab, config.workers, config.min_length) as frame:
        ranges = iter_line_ranges(files, BATCH_BYTES)
        framed = _framed_articles(ranges, frame, config, stats, on_bytes)
        windows = _windows(framed, maker)
        if config.shuffle:
            windows = _shuffled_by_piece(windows, random.Random(0))
        writer.write(windows)
    shards = writer.close()

    return DataManifest(
        inputs=inputs, dataset_key=key, corpus_dir=str(config.corpus_dir.resolve()),
        vocab_path=str(config.vocab.resolve()), vocab_size=vocab.size, pad_id=pad_id, **stats,
        windows=writer.windows, tokens=writer.tokens, scored_tokens=writer.scored_tokens, shards=tuple(shards),
    )


def _pieces_of(indices: np.ndarray, n: int, num_pieces: int) -> np.ndarray:
    """The port's protocol, step 4: the cut is by position, the last piece takes the rest."""
    per_piece = n // num_pieces
    if per_piece == 0:
        return np.full(indices.shape, num_pieces - 1, dtype=np.int64)
    return np.minimum(indices // per_piece, num_pieces - 1)


def _framed_articles(
    ranges: Iterable[LineRange], frame, config: PrepareConfig, stats: dict, on_bytes: Callable[[int], None]
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(piece, framed ids, article index of each id) in stream order, a run per piece and range."""
    submitted: deque[LineRange] = deque()

    def submit() -> Iterator[LineRange]:
        for r in ranges:
            submitted.append(r)
            yield r

    first_index = 0
    lines_before: dict[str, int] = {}  # physical lines of each file in the ranges done so far
    current: CorpusFile | None = None
    for result in frame(submit()):
        r = submitted.popleft()
        if r.file is not current:
            _check_unchanged(current, lines_before)
            current = r.file
        _count(result, r, lines_before.get(r.file.rel, 0), config, stats)
        lines_before[r.file.rel] = lines_before.get(r.file.rel, 0) + result.lines
        on_bytes(r.end - r.start)
        kept = first_index + np.flatnonzero(result.status == KEPT)
        first_index += result.status.shape[0]
        lengths = np.diff(result.bounds)
        pieces = _pieces_of(kept, stats["articles_total"], config.num_pieces)
        docs = np.repeat(kept, lengths)
        # Runs of articles of one piece: their framed ids are contiguous.
        run_starts = np.flatnonzero(np.diff(pieces, prepend=-1))
        run_ends = np.append(run_starts[1:], pieces.shape[0])
        for a, b in zip(run_starts.tolist(), run_ends.tolist()):
            lo, hi = result.bounds[a], result.bounds[b]
            yield int(pieces[a]), result.framed[lo:hi], docs[lo:hi]
    _check_unchanged(current, lines_before)


def _check_unchanged(file: CorpusFile | None, lines_before: dict[str, int]) -> None:
    """The workers read a file's ranges after the scan hashed it: the same line count, or it changed."""
    if file is not None and lines_before.get(file.rel, 0) != file.lines:
        raise CorpusError(f"{file.path}: changed while prepare read it ({file.lines} lines when scanned, "
                          f"{lines_before.get(file.rel, 0)} when read); run prepare again once it is written")


def _count(result: FramedBatch, r: LineRange, lines_before: int, config: PrepareConfig, stats: dict) -> None:
    bad = np.flatnonzero(result.status == BAD)
    if bad.size and not config.skip_bad_lines:
        line, problem = result.problems[int(bad[0])]
        raise bad_line_error(r.file, lines_before + line + 1, problem)
    kept = int((result.status == KEPT).sum())
    stats["bad_lines"] += int(bad.size)
    stats["articles_kept"] += kept
    stats["articles_dropped"] += result.status.shape[0] - kept
    stats["stream_tokens"] += int(result.framed.shape[0])


def _windows(framed: Iterable[tuple[int, np.ndarray, np.ndarray]], maker: WindowMaker) -> Iterator[Windows]:
    for piece, ids, docs in framed:
        yield from maker.add(piece, ids, docs)
    yield from maker.finish()


def _shuffled_by_piece(blocks: Iterable[Windows], rng: random.Random) -> Iterator[Windows]:
    """The port's protocol, step 9: one seeded generator, each piece's windows shuffled in turn.

    Shuffling a list of row numbers draws exactly what shuffling the windows would."""
    current: list[Windows] = []

    def shuffled() -> Windows:
        piece = Windows.concat(current)
        order = list(range(len(piece)))
        rng.shuffle(order)
        return piece.take(np.asarray(order, dtype=np.int64))

    for block in blocks:
        if current and block.piece != current[0].piece:
            yield shuffled()
            current = []
        current.append(block)
    if current:
        yield shuffled()
