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
class Article:
    index: int  # position in the port's list of all articles (bad lines keep theirs)
    text: str | None  # None for a bad line skipped with --skip-bad-lines
    file: CorpusFile
    line: int  # 1-based


def select_files(root: Path, files: str) -> list[Path]:
    """Subfolders in sorted order; in each, the first file by name (`first`) or all (`all`).

    The port takes the first entry `os.listdir` returns in each subfolder; we make that
    deterministic by sorting. Hidden entries (".DS_Store", ".git") are not corpus files.
    """
    if files not in FILES_CHOICES:
        raise CorpusError(f"--files {files!r}: choose one of {', '.join(FILES_CHOICES)}")
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


def iter_articles(
    files: list[CorpusFile],
    skip_bad_lines: bool,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[Article]:
    """Every non-blank line of every file, in order, as the port's `json.loads(line)["text"]`."""
    index = 0
    for cf in files:
        with open(cf.path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if on_bytes is not None:
                    on_bytes(len(raw))
                if not raw.strip():
                    continue
                text = _parse_line(raw, cf, lineno, skip_bad_lines)
                yield Article(index=index, text=text, file=cf, line=lineno)
                index += 1


def _parse_line(raw: bytes, cf: CorpusFile, lineno: int, skip_bad_lines: bool) -> str | None:
    where = f"{cf.path}:{lineno}"
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = f"malformed JSON line ({exc})"
    else:
        if not isinstance(obj, dict):
            problem = f"a JSON {type(obj).__name__}, not an object"
        elif "text" not in obj:
            problem = 'no "text" field'
        elif not isinstance(obj["text"], str):
            problem = f'"text" is a JSON {type(obj["text"]).__name__}, not a string'
        else:
            return obj["text"]
    if skip_bad_lines:
        return None
    raise CorpusError(f"{where}: {problem}; fix the line or pass --skip-bad-lines to skip and count it")
