"""A corpus on disk: its format, the files that take part, and what the manifest records of each.

Four formats (docs/design.md, "Corpora"):

- ``wiki_zh``: the port's layout, CORPUS/AA/wiki_00, CORPUS/AA/wiki_01, …, CORPUS/AB/…, each file
  one JSON object per line, `{"id", "url", "title", "text"}`; the first file of each subfolder
  (the port's protocol, steps 1–2), or all of them.
- ``jsonl``: JSON objects one per line in .jsonl / .json files, the text in one field.
- ``text``: plain UTF-8 .txt files, a blank line between documents.
- ``parquet``: .parquet files with a string column of text, one document per row.

A file CORPUS is read as it is; in a folder CORPUS every file of the format is, at any depth, in
sorted order of their paths. `auto` picks the format by what it finds and says why. What a
worker reads of each file, and how, is documents.py.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npueval.core.errors import CorpusError, not_a_folder
from npueval.core.files import file_sha256

log = logging.getLogger(__name__)

WIKI_ZH, JSONL, TEXT, PARQUET = "wiki_zh", "jsonl", "text", "parquet"
FORMATS = (WIKI_ZH, JSONL, TEXT, PARQUET)
FORMAT_CHOICES = ("auto", *FORMATS)
SUFFIXES = {JSONL: (".jsonl", ".json"), TEXT: (".txt",), PARQUET: (".parquet",)}
FILES_CHOICES = ("first", "all")
LINE_FORMATS = (WIKI_ZH, JSONL)  # one document per non-blank line


@dataclass(frozen=True)
class CorpusFile:
    """One file that takes part, with what the manifest records about it."""

    path: Path
    rel: str  # relative to the corpus root ("/"-separated); a file CORPUS: its name
    sha256: str
    lines: int  # physical lines, blank ones included (parquet: rows)
    articles: int  # documents: non-blank lines (jsonl, wiki_zh), paragraphs (text) or rows (parquet)
    size: int


@dataclass(frozen=True)
class Corpus:
    root: Path
    format: str
    text_field: str  # jsonl, wiki_zh: the JSON key; parquet: the column
    files: tuple[CorpusFile, ...]
    chosen_because: str  # how the format was picked, for the log

    @property
    def articles(self) -> int:
        return sum(f.articles for f in self.files)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def open_corpus(root: Path, fmt: str = "auto", files: str | None = None, text_field: str = "text") -> Corpus:
    """The corpus at ROOT, its files chosen, hashed and counted; a one-line error naming CORPUS
    and the flag to change where it is not one."""
    root = Path(root)
    if fmt == "auto":
        fmt, because = detect_format(root)
    else:
        because = f"--format {fmt}"
    if files is not None and fmt != WIKI_ZH:
        raise CorpusError(f"--files {files}: chooses files of the wiki_zh layout; CORPUS {root} is read as {fmt} "
                          "(every file of it): leave --files out")
    paths = select_files(root, files or "first") if fmt == WIKI_ZH else _files_of_format(root, fmt)
    scanned = scan_files(root, paths, fmt, text_field)
    return Corpus(root, fmt, text_field, tuple(scanned), because)


def detect_format(root: Path) -> tuple[str, str]:
    """(format, why) of what ROOT holds: by the suffix of its files, or the wiki_zh layout."""
    if root.is_file():
        fmt = _format_of(root)
        if fmt is None:
            raise CorpusError(f"CORPUS {root}: cannot tell its format from the suffix {root.suffix or '(none)'}; "
                              "pass --format jsonl, text or parquet")
        return fmt, f"the suffix {root.suffix}"
    if not root.is_dir():
        raise CorpusError(f"CORPUS {root}: {not_a_folder(root)}; pass a corpus folder or file")
    found = _data_files(root)
    if not found:
        raise CorpusError(f"CORPUS {root}: empty corpus, no files in it; pass the folder that holds the corpus")
    kinds: dict[str, list[Path]] = {}
    for path in found:
        if (fmt := _format_of(path)) is not None:
            kinds.setdefault(fmt, []).append(path)
    if len(kinds) > 1:
        named = " and ".join(f"{len(v)} {k} file(s)" for k, v in sorted(kinds.items()))
        raise CorpusError(f"CORPUS {root}: holds {named}; pass --format to choose one")
    if kinds:
        ((fmt, paths),) = kinds.items()
        return fmt, f"{len(paths)} {'/'.join(SUFFIXES[fmt])} file(s)"
    if found and all(p.parent != root for p in found):
        return WIKI_ZH, "subfolders of files without a suffix (AA/wiki_00, …)"
    raise CorpusError(f"CORPUS {root}: no .jsonl, .json, .txt or .parquet file, and not the wiki_zh layout "
                      "(AA/wiki_00, …); pass --format")


def _format_of(path: Path) -> str | None:
    return next((fmt for fmt, suffixes in SUFFIXES.items() if path.suffix.lower() in suffixes), None)


def _data_files(root: Path) -> list[Path]:
    """Every file under ROOT, at any depth, sorted by relative path; hidden ones (".git",
    ".DS_Store") and those in hidden folders are not corpus files."""
    return sorted(
        (p for p in root.rglob("*") if p.is_file()
         and not any(part.startswith(".") for part in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def _files_of_format(root: Path, fmt: str) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise CorpusError(f"CORPUS {root}: {not_a_folder(root)}; pass a corpus folder or file")
    found = _data_files(root)
    chosen = [p for p in found if _format_of(p) == fmt]
    if len(chosen) < len(found):
        log.info("CORPUS %s: %d file(s) without a %s suffix left out (%s)", root, len(found) - len(chosen),
                 "/".join(SUFFIXES[fmt]), ", ".join(p.name for p in found if p not in chosen)[:200])
    if not chosen:
        raise CorpusError(f"CORPUS {root}: empty corpus, no {'/'.join(SUFFIXES[fmt])} file in it; pass the folder "
                          "that holds them, or the right --format")
    return chosen


def select_files(root: Path, files: str) -> list[Path]:
    """The wiki_zh layout: subfolders in sorted order; in each, the first file by name (`first`)
    or all (`all`).

    The port takes the first entry `os.listdir` returns in each subfolder; we make that
    deterministic by sorting. Hidden entries (".DS_Store", ".git") are not corpus files.
    """
    if not root.is_dir():
        raise CorpusError(f"CORPUS {root}: {not_a_folder(root)}; pass the wiki_zh folder (with AA/, AB/, …)")
    chosen: list[Path] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        names = sorted(p for p in sub.iterdir() if p.is_file() and not p.name.startswith("."))
        chosen.extend(names[:1] if files == "first" else names)
    if not chosen:
        raise CorpusError(
            f"CORPUS {root}: empty corpus, no files in its subfolders; "
            "expected the wiki_zh layout AA/wiki_00, AB/wiki_00, …"
        )
    return chosen


def scan_files(root: Path, paths: list[Path], fmt: str = WIKI_ZH, text_field: str = "text") -> list[CorpusFile]:
    """Hash each file and count its lines and documents in one read."""
    scanned = []
    for path in paths:
        if fmt == PARQUET:
            sha256, size, lines, articles = _scan_parquet(path, text_field)
        else:
            sha256, size, lines, articles = _scan(path, paragraphs=fmt == TEXT)
        rel = path.name if path == root else path.relative_to(root).as_posix()
        scanned.append(CorpusFile(path=path, rel=rel, sha256=sha256, lines=lines, articles=articles, size=size))
    if sum(f.articles for f in scanned) == 0:
        what = {TEXT: "text", PARQUET: "rows"}.get(fmt, "articles; expected one JSON object per line")
        raise CorpusError(f"CORPUS {root}: empty corpus, its {len(scanned)} selected file(s) hold no {what}")
    return scanned


def _scan(path: Path, block_bytes: int = 1 << 23, paragraphs: bool = False) -> tuple[str, int, int, int]:
    """(sha256, bytes, physical lines, documents) of one file, read in large blocks: the lines
    are split and tested in C, not one by one in Python. Documents are non-blank lines, or with
    `paragraphs` runs of them. Of a line that spans blocks only whether it is blank so far is
    kept, so a huge line costs no more than a short one."""
    digest = hashlib.sha256()
    size = lines = documents = 0
    open_line, open_blank = False, True  # a line begun in an earlier block: any bytes, all whitespace
    previous_blank = True  # the last line ended, for paragraphs
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            digest.update(block)
            size += len(block)
            parts = block.split(b"\n")
            if len(parts) > 1:  # parts[0] ends the open line; each "\n" ends one line
                lines += len(parts) - 1
                filled = np.fromiter(map(bool, map(bytes.strip, parts[1:-1])), dtype=bool, count=len(parts) - 2)
                first = (not open_blank) or bool(parts[0].strip())
                if paragraphs:
                    ended = np.concatenate([[first], filled])
                    before = np.concatenate([[not previous_blank], ended[:-1]])
                    documents += int((ended & ~before).sum())
                    previous_blank = not ended[-1]
                else:
                    documents += first + int(filled.sum())
                open_line, open_blank = False, True
            if parts[-1]:
                open_line, open_blank = True, open_blank and not parts[-1].strip()
    if open_line and not open_blank:  # a last line without "\n"
        documents += previous_blank if paragraphs else 1
    lines += open_line
    return digest.hexdigest(), size, lines, documents


def _scan_parquet(path: Path, column: str) -> tuple[str, int, int, int]:
    """(sha256, bytes, rows, rows) of a Parquet file whose COLUMN holds strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
        schema, rows = meta.schema_arrow, meta.metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise CorpusError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                          "pass the right --format, or rewrite the file") from None
    if column not in schema.names:
        raise CorpusError(f"{path}: no column {column!r} (its columns: {', '.join(schema.names)[:200]}); pass "
                          "--text-field with the one that holds the text")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise CorpusError(f"{path}: column {column!r} holds {kind}, not strings; pass --text-field with the column "
                          "that holds the text")
    return file_sha256(path), path.stat().st_size, rows, rows
