"""`npueval prepare`: a corpus → tokenized windows in Parquet shards + manifest.json.

With GPT2-Chinese's vocab.txt it follows docs/design.md, "The port's protocol", steps 1–9
(get_data_json.py, pre_data.py and compare_loss.py's windows); with a model's tokenizer.json,
"Any causal LM": one stream of BOS ids EOS per document, cut into sliding windows. Streaming
either way: documents are read, tokenized in batches and cut into windows as they come, so
memory does not grow with the corpus (with --shuffle it holds one piece's windows, since the
port shuffles each piece as a whole).
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import random
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from npueval.core.errors import CorpusError, DatasetError, UserError
from npueval.core.files import WRITE_ERRNOS, output_lock, pid_alive

from .batches import BAD, KEPT, FramedBatch, Reading, batch_framer
from .corpus import FILES_CHOICES, FORMAT_CHOICES, WIKI_ZH, Corpus, CorpusFile, open_corpus
from .dataset import ShardWriter
from .documents import Chunk, bad_line_error, iter_chunks
from .joined import joined_stream
from .manifest import FORMAT_VERSION, CorpusFileEntry, DataInputs, DataManifest
from .model_tokenizer import ModelTokenizer, build_seq_len, framing_of, model_tokenizer
from .windows import MODES, RollingWindowMaker, WindowMaker, Windows, window_maker

log = logging.getLogger(__name__)

#: The tokenizing workers get the files in ranges of about this many bytes.
BATCH_BYTES = 1 << 20
#: The framed ids of a range go into windows this many at a time, so that a long document's
#: windows are made (and written) as they come rather than all at once.
STREAM_TOKENS = 1 << 18
ProgressFn = Callable[[int, int], None]  # (bytes done so far, bytes in all)
#: A run of the framed stream: (piece, ids, document of each id, bytes of each id, words of each id).
Framed = tuple[int, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


@dataclass(frozen=True)
class PrepareConfig:
    """What `npueval prepare` was asked for. n_ctx, mode, stride, num_pieces and min_length left
    None take the tokenizer's defaults (`for_tokenizer`): the port's for GPT2-Chinese's vocab.txt
    (512, seed, 768, 100, 128), one sliding stream of every document for a tokenizer.json
    (the build's seq_len or 512, sliding, n_ctx / 2, 1, 0). `max_length` is lm-evaluation-harness's,
    for --mode rolling: windows of n_ctx = max_length + 1 ids (docs/design.md, "Rolling and stride")."""

    corpus_dir: Path  # a folder or one file
    vocab: Path | None = None  # GPT2-Chinese's vocab.txt …
    out: Path = Path("data")
    tokenizer: Path | None = None  # … or the model's folder (checkpoint or build) or tokenizer file
    format: str = "auto"
    text_field: str = "text"
    mode: str | None = None
    files: str | None = None  # wiki_zh only; None: first
    n_ctx: int | None = None
    max_length: int | None = None
    stride: int | None = None
    num_pieces: int | None = None
    min_length: int | None = None
    shuffle: bool = False
    rows_per_shard: int = 4096
    skip_bad_lines: bool = False
    force: bool = False
    workers: int | None = None  # tokenizing processes; 0: this process; None: one per CPU

    def __post_init__(self) -> None:
        for name in ("corpus_dir", "vocab", "out", "tokenizer"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.mode is not None and self.mode not in MODES:
            raise UserError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.format not in FORMAT_CHOICES:
            raise UserError(f"--format {self.format!r}: choose one of {', '.join(FORMAT_CHOICES)}")
        if self.files is not None and self.files not in FILES_CHOICES:
            raise UserError(f"--files {self.files!r}: choose one of {', '.join(FILES_CHOICES)}")
        if self.n_ctx is not None and not 2 <= self.n_ctx <= 32767:
            raise UserError(f"--n-ctx {self.n_ctx}: must be between 2 and 32767")
        if self.max_length is not None and not 1 <= self.max_length <= 32766:
            raise UserError(f"--max-length {self.max_length}: must be between 1 and 32766")
        if self.stride is not None and self.stride < 1:
            raise UserError(f"--stride {self.stride}: must be at least 1")
        if self.num_pieces is not None and self.num_pieces < 1:
            raise UserError(f"--num-pieces {self.num_pieces}: must be at least 1")
        if self.min_length is not None and self.min_length < 0:
            raise UserError(f"--min-length {self.min_length}: must be 0 or more")
        if self.rows_per_shard < 1:
            raise UserError(f"--rows-per-shard {self.rows_per_shard}: must be at least 1")
        if self.workers is None:
            object.__setattr__(self, "workers", os.cpu_count() or 1)
        if self.workers < 0:
            raise UserError(f"--workers {self.workers}: must be 0 (tokenize in this process) or more")
        if not self.text_field:
            raise UserError("--text-field: name the JSON field or Parquet column that holds the text")

    def for_tokenizer(self, classic: bool, model_seq_len: int | None = None) -> PrepareConfig:
        """This config with every default filled in for a classic (vocab.txt) or tokenizer.json
        tokenizer (and the static length of the build it came from, if any), the combination checked."""
        mode = self.mode or ("seed" if classic else "sliding")
        if classic and mode in ("rolling", "stride"):
            raise UserError(f"--mode {mode}: lm-evaluation-harness's and Hugging Face's protocols, for a model's "
                            "tokenizer.json (--tokenizer MODEL); GPT2-Chinese's vocab.txt keeps the port's seed or "
                            "sliding windows")
        if mode == "seed" and not classic:
            raise UserError("--mode seed: the port's protocol, for GPT2-Chinese's vocab.txt; with a tokenizer.json "
                            "use --mode sliding (the default), rolling or stride")
        if self.max_length is not None and mode != "rolling":
            raise UserError(f"--max-length: lm-evaluation-harness's window, for --mode rolling; in {mode} mode "
                            "give the window's length with --n-ctx")
        n_ctx = self._n_ctx(mode, classic, model_seq_len)
        if mode == "rolling":
            for flag, value in (("--stride", self.stride), ("--min-length", self.min_length)):
                if value is not None:
                    raise UserError(f"{flag}: not with --mode rolling, which scores every document whole, in windows "
                                    f"that step by max_length ({n_ctx - 1}), as lm-evaluation-harness does")
        if mode == "stride" and self.min_length is not None:
            raise UserError("--min-length: not with --mode stride, which joins every document, as Hugging Face's "
                            "perplexity guide does")
        if mode in ("rolling", "stride") and self.num_pieces not in (None, 1):
            raise UserError(f"--num-pieces {self.num_pieces}: the port's, for --mode seed; {mode} mode makes one "
                            "stream")
        stride = n_ctx - 1 if mode == "rolling" else self.stride or (768 if mode == "seed" else n_ctx // 2)
        if mode == "sliding" and stride >= n_ctx:
            raise UserError(
                f"--stride {stride}: in sliding mode it must be less than --n-ctx "
                f"{n_ctx}, so that every window but the first has context for its first "
                "scored token"
            )
        if mode == "stride" and stride > n_ctx:
            raise UserError(f"--stride {stride}: in stride mode at most --n-ctx {n_ctx}; past it the guide's windows "
                            "leave tokens out")
        if self.shuffle and mode != "seed":
            raise UserError("--shuffle reproduces the port's seed protocol: use it with --mode seed")
        min_length = 0 if mode in ("rolling", "stride") else self.min_length
        return replace(self, mode=mode, n_ctx=n_ctx, stride=stride,
                       num_pieces=self.num_pieces or (100 if classic else 1),
                       min_length=min_length if min_length is not None else (128 if classic else 0))

    def _n_ctx(self, mode: str, classic: bool, model_seq_len: int | None) -> int:
        """--n-ctx; else --max-length + 1 (rolling); else the build's static length; else 512."""
        if self.max_length is not None:
            if self.n_ctx is not None and self.n_ctx != self.max_length + 1:
                raise UserError(f"--max-length {self.max_length} and --n-ctx {self.n_ctx}: rolling windows of "
                                f"max_length M are rows of M + 1 ids; give one of the two")
            return self.max_length + 1
        if self.n_ctx is not None:
            return self.n_ctx
        return model_seq_len if model_seq_len is not None and not classic else 512

    @property
    def keeps_every_document(self) -> bool:
        """Rolling and stride mode score every document, the empty ones too, as their references do."""
        return self.mode in ("rolling", "stride")


@dataclass(frozen=True)
class PrepareResult:
    out: Path
    manifest: DataManifest = field(repr=False)
    reused: bool  # True when `out` already held this data set and nothing was done
    format_chosen_because: str = ""  # how the corpus format was picked: a suffix, the layout, or --format


def prepare(config: PrepareConfig, progress: ProgressFn | None = None) -> PrepareResult:
    if config.out.exists() and not config.out.is_dir():
        raise DatasetError(f"--out {config.out} is a file; name a folder")
    tokenizer = model_tokenizer(config.vocab, config.tokenizer)
    config = config.for_tokenizer(tokenizer.classic, build_seq_len(config.tokenizer))
    tokenizer = framing_of(config.mode, tokenizer)
    corpus = open_corpus(config.corpus_dir, config.format, config.files, config.text_field)
    log.debug("CORPUS %s: %s (%s), %d file(s), %d documents; tokenizer %s", corpus.root, corpus.format,
              corpus.chosen_because, len(corpus.files), corpus.articles, tokenizer.file.path)
    inputs = _inputs(config, corpus, tokenizer)
    key = inputs.key()

    with _writing(config.out):
        existing = DataManifest.read(config.out) if config.out.is_dir() else None
        if existing is not None and existing.dataset_key == key:
            log.info("%s already holds this data set (%d windows); nothing to do", config.out, existing.windows)
            return PrepareResult(config.out, existing, reused=True, format_chosen_because=corpus.chosen_because)
        if config.out.exists() and not config.force and not _is_empty_dir(config.out):
            what = "another data set" if existing is not None else "files that are not an npueval data set"
            raise DatasetError(
                f"--out {config.out}: holds {what}; choose another folder or pass --force to replace it"
            )
        manifest = _prepare_into(config, corpus, tokenizer, inputs, key, progress)
    log.info(
        "prepared %d windows (%d scored tokens) from %d of %d %s into %s",
        manifest.windows,
        manifest.scored_tokens,
        manifest.articles_kept,
        manifest.articles_total,
        "articles" if corpus.format == WIKI_ZH else "documents",
        config.out,
    )
    return PrepareResult(config.out, manifest, reused=False, format_chosen_because=corpus.chosen_because)


def _prepare_into(config: PrepareConfig, corpus: Corpus, tokenizer: ModelTokenizer, inputs: DataInputs, key: str,
                  progress: ProgressFn | None) -> DataManifest:
    """The data set, made in a partial folder beside OUT and put in its place when complete."""
    partial = config.out.parent / f".{config.out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
    except OSError as exc:
        raise DatasetError(f"--out {config.out}: cannot make the folder ({exc.strerror or exc}); "
                           "choose another --out") from None
    try:
        manifest = _build(config, corpus, tokenizer, inputs, key, partial, progress)
        if not manifest.windows:  # `run` would refuse it: say so now, and leave --out as it was
            raise DatasetError(
                f"CORPUS {config.corpus_dir}: not one window could be made (articles kept: "
                f"{manifest.articles_kept} of {manifest.articles_total}, mode {config.mode}, n_ctx "
                f"{config.n_ctx}); give it more text, or pass a smaller --n-ctx or --min-length")
        manifest.write(partial)
        _publish(partial, config.out)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:  # pyarrow's name no file: say which folder
            room = "" if exc.errno == errno.EROFS else "free some space, or "
            raise DatasetError(f"--out {config.out}: cannot write the data set ({os.strerror(exc.errno)}); {room}"
                               "choose another --out") from None
        raise
    return manifest


def _inputs(config: PrepareConfig, corpus: Corpus, tokenizer: ModelTokenizer) -> DataInputs:
    """Everything that decides the data set's content: equal inputs, equal shards."""
    return DataInputs(
        format_version=FORMAT_VERSION, mode=config.mode, n_ctx=config.n_ctx, stride=config.stride,
        num_pieces=config.num_pieces, min_length=config.min_length, shuffle=config.shuffle,
        files_mode=config.files or ("first" if corpus.format == WIKI_ZH else "all"),
        skip_bad_lines=config.skip_bad_lines, rows_per_shard=config.rows_per_shard,
        vocab_sha256=tokenizer.file.sha256,
        files=tuple(CorpusFileEntry(f.rel, f.sha256, f.lines) for f in corpus.files),
        corpus_format=corpus.format, text_field=corpus.text_field, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
    )


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """OUT is this process's to write while the block runs: a second prepare into it is refused at
    once, where it would have replaced the first one's data set when it finished; what prepares
    that died (SIGKILL, a power cut) left beside it is cleaned up first."""
    with output_lock(out):
        _clean_up_after_the_dead(out)
        yield


def _clean_up_after_the_dead(out: Path) -> None:
    """The folders of prepares into OUT whose process is gone: a partial one is removed; an earlier
    data set that one set aside to publish (`_publish`) goes back in place if OUT is missing (it
    died between the two renames), else is removed. Under OUT's lock no live prepare writes them."""
    for path in sorted(out.parent.glob(f".{glob.escape(out.name)}.*-*")):
        kind, _, pid = path.name[len(out.name) + 2:].rpartition("-")
        if kind not in ("partial", "old") or not pid.isdigit() or pid_alive(int(pid)):
            continue
        if kind == "old" and not out.exists():
            log.warning("putting back %s as %s: the prepare that replaced it ended half-way", path, out)
            os.rename(path, out)
        else:
            log.info("removing %s, left by a prepare that ended before it could", path)
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


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
    corpus: Corpus,
    tokenizer: ModelTokenizer,
    inputs: DataInputs,
    key: str,
    folder: Path,
    progress: ProgressFn | None,
) -> DataManifest:
    total_bytes = corpus.size
    done = [0]

    def on_bytes(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total_bytes)

    stats = {"articles_total": corpus.articles, "articles_kept": 0, "articles_dropped": 0,
             "bad_lines": 0, "stream_tokens": 0}
    writer = ShardWriter(folder, config.n_ctx, config.rows_per_shard)
    maker = window_maker(config.mode, config.n_ctx, config.stride, tokenizer.pad_id)

    reading = Reading(tokenizer, corpus.format, corpus.text_field,
                      None if config.keeps_every_document else config.min_length, count_words=config.mode == "rolling")
    with batch_framer(reading, config.workers) as frame:
        chunks = iter_chunks(corpus, BATCH_BYTES)
        if config.mode == "stride":
            framed = joined_stream(chunks, reading, config.skip_bad_lines, stats, on_bytes)
        else:
            framed = _framed_articles(chunks, frame, config, corpus.format, stats, on_bytes)
        windows = _windows(framed, maker)
        if config.shuffle:
            windows = _shuffled_by_piece(windows, random.Random(0))
        writer.write(windows)
    shards = writer.close()

    return DataManifest(
        inputs=inputs, dataset_key=key, corpus_dir=str(config.corpus_dir.resolve()),
        vocab_path=str(tokenizer.file.path.resolve()), vocab_size=tokenizer.file.size, pad_id=tokenizer.pad_id,
        **stats, windows=writer.windows, tokens=writer.tokens, scored_tokens=writer.scored_tokens,
        shards=tuple(shards), scored_bytes=writer.scored_bytes, scored_words=writer.scored_words,
    )


def _pieces_of(indices: np.ndarray, n: int, num_pieces: int) -> np.ndarray:
    """The port's protocol, step 4: the cut is by position, the last piece takes the rest."""
    per_piece = n // num_pieces
    if per_piece == 0:
        return np.full(indices.shape, num_pieces - 1, dtype=np.int64)
    return np.minimum(indices // per_piece, num_pieces - 1)


def _framed_articles(
    chunks: Iterable[Chunk], frame, config: PrepareConfig, fmt: str, stats: dict, on_bytes: Callable[[int], None]
) -> Iterator[Framed]:
    """(piece, framed ids, article index of each id, bytes of each id or None, words of each id or
    None: a document's on its first) in stream order, a run per piece and chunk."""
    submitted: deque[Chunk] = deque()

    def submit() -> Iterator[Chunk]:
        for chunk in chunks:
            submitted.append(chunk)
            yield chunk

    first_index = 0
    lines_before: dict[str, int] = {}  # physical lines of each file in the ranges done so far
    current: CorpusFile | None = None
    for result in frame(submit()):
        r = submitted.popleft()
        if r.file is not current:
            _check_unchanged(current, lines_before)
            current = r.file
        _count(result, r, lines_before.get(r.file.rel, 0), config, fmt, stats)
        lines_before[r.file.rel] = lines_before.get(r.file.rel, 0) + result.lines
        on_bytes(r.size)
        kept = first_index + np.flatnonzero(result.status == KEPT)
        first_index += result.status.shape[0]
        words = None
        if result.words is not None:
            words = np.zeros(result.framed.shape[0], dtype=np.int64)
            words[result.bounds[:-1]] = result.words  # every document has its prefix slot
        pieces = _pieces_of(kept, stats["articles_total"], config.num_pieces)
        # Runs of articles of one piece: their framed ids are contiguous.
        run_starts = np.flatnonzero(np.diff(pieces, prepend=-1))
        run_ends = np.append(run_starts[1:], pieces.shape[0])
        for a, b in zip(run_starts.tolist(), run_ends.tolist()):
            for lo in range(int(result.bounds[a]), int(result.bounds[b]), STREAM_TOKENS):
                hi = min(lo + STREAM_TOKENS, int(result.bounds[b]))
                # The articles with ids in [lo, hi), and how many of those ids each has.
                first = int(np.searchsorted(result.bounds, lo, side="right")) - 1
                last = int(np.searchsorted(result.bounds, hi, side="left"))
                docs = np.repeat(kept[first:last], np.diff(np.clip(result.bounds[first:last + 1], lo, hi)))
                nbytes = None if result.nbytes is None else result.nbytes[lo:hi]
                yield int(pieces[a]), result.framed[lo:hi], docs, nbytes, None if words is None else words[lo:hi]
    _check_unchanged(current, lines_before)


def _check_unchanged(file: CorpusFile | None, lines_before: dict[str, int]) -> None:
    """The workers read a file's ranges after the scan hashed it: the same line count, or it changed."""
    if file is not None and lines_before.get(file.rel, 0) != file.lines:
        raise CorpusError(f"{file.path}: changed while prepare read it ({file.lines} lines when scanned, "
                          f"{lines_before.get(file.rel, 0)} when read); run prepare again once it is written")


def _count(result: FramedBatch, r: Chunk, lines_before: int, config: PrepareConfig, fmt: str, stats: dict) -> None:
    bad = np.flatnonzero(result.status == BAD)
    if bad.size and not config.skip_bad_lines:
        line, problem = result.problems[int(bad[0])]
        raise bad_line_error(r.file, lines_before + line + 1, problem, fmt)
    kept = int((result.status == KEPT).sum())
    stats["bad_lines"] += int(bad.size)
    stats["articles_kept"] += kept
    stats["articles_dropped"] += result.status.shape[0] - kept
    stats["stream_tokens"] += int(result.framed.shape[0])


def _windows(framed: Iterable[Framed], maker: WindowMaker | RollingWindowMaker) -> Iterator[Windows]:
    for piece, ids, docs, nbytes, words in framed:
        yield from maker.add(piece, ids, docs, nbytes, words)
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
