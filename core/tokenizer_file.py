"""A model's tokenizer file, which travels with it: the build manifest and the data manifest are
matched by its sha256.

Two kinds: GPT2-Chinese's `vocab.txt` (BERT-Chinese WordPiece, tokenized by npueval's classic
tokenizer, the port's), and a Hugging Face `tokenizer.json` (tokenized by the `tokenizers`
library). A checkpoint folder holds one or both; `find_tokenizer` says which is the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import VocabError
from .files import file_sha256
from .vocab import load_vocab

VOCAB_TXT = "vocab.txt"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"  # its BOS and EOS tokens, beside a tokenizer.json
KINDS = (VOCAB_TXT, TOKENIZER_JSON)


@dataclass(frozen=True)
class TokenizerFile:
    path: Path
    kind: str  # VOCAB_TXT or TOKENIZER_JSON
    sha256: str
    size: int  # one past the largest id it can produce (added tokens included)


def find_tokenizer(folder: Path, prefer_vocab_txt: bool, flag: str | None = None) -> TokenizerFile:
    """The tokenizer of the model in FOLDER. A GPT-2 folder with vocab.txt keeps GPT2-Chinese's
    classic tokenizer (`prefer_vocab_txt`); otherwise tokenizer.json, else vocab.txt."""
    order = (VOCAB_TXT, TOKENIZER_JSON) if prefer_vocab_txt else (TOKENIZER_JSON, VOCAB_TXT)
    for name in order:
        if (folder / name).is_file():
            return read_tokenizer(folder / name, flag)
    raise VocabError(f"{_where(flag, folder)}: no tokenizer.json or vocab.txt; copy the model's tokenizer files "
                     "(tokenizer.json and tokenizer_config.json, or GPT2-Chinese's vocab.txt) into the folder")


def read_tokenizer(path: Path, flag: str | None = None) -> TokenizerFile:
    """A tokenizer file checked for what it is: vocab.txt's tokens, or a tokenizer.json that the
    `tokenizers` library loads."""
    if path.name == TOKENIZER_JSON or path.suffix == ".json":
        return TokenizerFile(path, TOKENIZER_JSON, file_sha256(path), _json_size(path, flag))
    vocab = load_vocab(path, flag=flag)
    return TokenizerFile(path, VOCAB_TXT, vocab.sha256, vocab.size)


def _json_size(path: Path, flag: str | None) -> int:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the library raises a bare Exception on a file it cannot read
        raise VocabError(f"{_where(flag, path)}: not a tokenizer.json the tokenizers library reads ({exc}); restore "
                         "the model's tokenizer.json") from None
    ids = list(tokenizer.get_vocab(with_added_tokens=True).values())
    if not ids:
        raise VocabError(f"{_where(flag, path)}: an empty vocabulary; restore the model's tokenizer.json")
    return max(ids) + 1



def _where(flag: str | None, path: Path) -> str:
    """The path as a message names it: after its flag, or alone for a checkpoint's own file."""
    return f"{flag} {path}" if flag else str(path)
