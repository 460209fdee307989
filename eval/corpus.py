"""A wiki_zh_2019 corpus on disk: which files the port reads, and its articles, streamed.

The layout is CORPUS/AA/wiki_00, CORPUS/AA/wiki_01, …, CORPUS/AB/…, each file one JSON
object per line, `{"id", "url", "title", "text"}`. port-protocol.md steps 1–2.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import CorpusError

FILES_CHOICES = ("first", "all")


@dataclass(frozen=True)
class CorpusFile:
    """One file that takes part, with what the manifest records about it."""

    path: Path
    rel: str  # relative to the corpus root, "/"-separated
    sha256: str
    lines: int  # physical lines, blank ones included
    articles: int  # non-blank lines: each is one position in the port's article list
    size: int


@dataclass(frozen=True)
class LineBatch:
    """Non-blank lines of one file, in order: each one position in the port's article list."""

    file: CorpusFile
    linenos: list[int]  # 1-based, counting blank lines too
    raws: list[bytes]


def select_files(root: Path, files: str) -> list[Path]:
    """Subfolders in sorted order; in each, the first file by name (`first`) or all (`all`).

    The port takes the first entry `os.listdir` returns in each subfolder; we make that
    deterministic by sorting. Hidden entries (".DS_Store", ".git") are not corpus files.
    """
    if not root.is_dir():
        raise CorpusError(f"CORPUS_DIR {root}: no such folder; pass the wiki_zh folder (with AA/, AB/, …)")
    chosen: list[Path] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        names = sorted(p for p in sub.iterdir() if p.is_file() and not p.name.startswith("."))
        chosen.extend(names[:1] if files == "first" else names)
    if not chosen:
        raise CorpusError(
            f"CORPUS_DIR {root}: empty corpus, no files in its subfolders; "
            "expected the wiki_zh layout AA/wiki_00, AB/wiki_00, …"
        )
    return chosen


def scan_files(root: Path, paths: list[Path]) -> list[CorpusFile]:
    """Hash each file and count its lines in one read."""
    scanned = []
    for path in paths:
        digest = hashlib.sha256()
        lines = articles = size = 0
        with open(path, "rb") as f:
            for raw in f:
                digest.update(raw)
                size += len(raw)
                lines += 1
                if raw.strip():
                    articles += 1
        scanned.append(
            CorpusFile(
                path=path,
                rel=path.relative_to(root).as_posix(),
                sha256=digest.hexdigest(),
                lines=lines,
                articles=articles,
                size=size,
            )
        )
    if sum(f.articles for f in scanned) == 0:
        raise CorpusError(
            f"CORPUS_DIR {root}: empty corpus, its {len(scanned)} selected file(s) hold no "
            "articles; expected one JSON object per line"
        )
    return scanned


def iter_line_batches(
    files: list[CorpusFile], batch_bytes: int, on_bytes: Callable[[int], None] | None = None
) -> Iterator[LineBatch]:
    """The non-blank lines of every file, in order, in batches of about `batch_bytes`.

    Files are read in blocks and split at "\n" in C; a batch never spans two files.
    """
    for cf in files:
        batch = LineBatch(cf, [], [])
        lineno = size = 0
        tail = b""

        def take(lines: list[bytes]) -> None:
            nonlocal lineno, size
            for raw in lines:
                lineno += 1
                if raw.strip():
                    batch.linenos.append(lineno)
                    batch.raws.append(raw)
                    size += len(raw)

        with open(cf.path, "rb") as f:
            while block := f.read(batch_bytes):
                if on_bytes is not None:
                    on_bytes(len(block))
                lines = (tail + block).split(b"\n")
                tail = lines.pop()  # the start of a line the next block finishes
                take(lines)
                if size >= batch_bytes:
                    yield batch
                    batch, size = LineBatch(cf, [], []), 0
        take([tail] if tail else [])  # a last line without "\n"
        if batch.raws:
            yield batch


def parse_text(raw: bytes) -> tuple[str | None, str | None]:
    """The port's `json.loads(line)["text"]`: (text, None), or (None, what is wrong)."""
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"malformed JSON line ({exc})"
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    if "text" not in obj:
        return None, 'no "text" field'
    if not isinstance(obj["text"], str):
        return None, f'"text" is a JSON {type(obj["text"]).__name__}, not a string'
    return obj["text"], None


def bad_line_error(file: CorpusFile, lineno: int, problem: str) -> CorpusError:
    return CorpusError(
        f"{file.path}:{lineno}: {problem}; fix the line or pass --skip-bad-lines to skip and count it"
    )
