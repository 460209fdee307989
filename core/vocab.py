"""vocab.txt of a BERT-Chinese WordPiece checkpoint: tokens, ids, special ids, and its sha256, the
identity a build manifest and a data manifest are matched by."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import VocabError
from .files import file_sha256

#: The special tokens the classic tokenizer cuts out of raw text before anything else.
SPECIAL_TOKENS = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")
#: The ones the port's protocol needs in the vocabulary.
REQUIRED_TOKENS = ("[UNK]", "[SEP]", "[CLS]", "[MASK]")


@dataclass(frozen=True)
class Vocab:
    path: Path
    token_to_id: dict[str, int] = field(repr=False)
    sha256: str

    @property
    def size(self) -> int:
        """Number of ids the model needs: one past the largest id."""
        return max(self.token_to_id.values()) + 1

    @property
    def unk_id(self) -> int:
        return self.token_to_id["[UNK]"]

    @property
    def sep_id(self) -> int:
        return self.token_to_id["[SEP]"]

    @property
    def cls_id(self) -> int:
        return self.token_to_id["[CLS]"]

    @property
    def mask_id(self) -> int:
        return self.token_to_id["[MASK]"]


def load_vocab(path: str | Path, flag: str | None = "--vocab") -> Vocab:
    """Read vocab.txt as the classic tokenizer does: one token per line, id = line index.

    Only the trailing "\\n" is removed from a line (the classic `rstrip('\\n')`), and a
    token that appears twice keeps its last id. `flag` names the path in messages: the
    command-line flag it came from, or None for a checkpoint folder's own vocab.txt.
    """
    path = Path(path)
    where = f"{flag} {path}" if flag else str(path)
    fix = "pass the checkpoint's vocab.txt" if flag else "restore the checkpoint's own vocab.txt"
    if not path.is_file():
        raise VocabError(f"{where}: no such file; {fix}")
    try:
        # Text mode on purpose: universal newlines, then split on "\n" only, like the classic.
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as exc:
        raise VocabError(f"{where}: not UTF-8 text (byte {exc.start}); {fix}") from None
    token_to_id = {line.rstrip("\n"): index for index, line in enumerate(lines)}
    missing = [t for t in REQUIRED_TOKENS if t not in token_to_id]
    if missing:
        raise VocabError(f"{where}: not a BERT-Chinese vocab.txt, it lacks {' '.join(missing)}; {fix}")
    return Vocab(path=path, token_to_id=token_to_id, sha256=file_sha256(path))
