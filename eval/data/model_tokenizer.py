"""The tokenizer `prepare` uses, found from `--tokenizer` (a checkpoint or build folder, or the
file) or `--vocab`, with the special ids that frame each document.

Two kinds (core/tokenizer_file.py). GPT2-Chinese's vocab.txt keeps the port's protocol: the
classic tokenizer, "\\n" as [SEP], each article as [MASK] … [CLS]. A tokenizer.json is run by the
`tokenizers` library, and each document becomes its BOS id (where the tokenizer defines one),
its ids without special tokens, and its EOS id (where it defines one); BOS, EOS and PAD come from
the tokenizer_config.json beside it, as Hugging Face checkpoints carry them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from npueval.core.errors import VocabError
from npueval.core.tokenizer_file import (
    TOKENIZER_CONFIG,
    TOKENIZER_JSON,
    VOCAB_TXT,
    TokenizerFile,
    find_tokenizer,
    read_tokenizer,
)
from npueval.core.vocab import load_vocab

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelTokenizer:
    file: TokenizerFile
    bos_id: int | None  # tokenizer.json: put before each document; None: none
    eos_id: int | None  # … and after it
    pad_id: int  # fills the tail of a short window (never scored)
    # Rolling mode: the ids the tokenizer's post-processor puts around a text (lm-eval encodes with
    # them), after bos_id and before eos_id, but not around a text that starts with this text.
    post_bos: int | None = None
    post_eos: int | None = None
    plain_if_starts_with: str | None = None

    @property
    def classic(self) -> bool:
        """GPT2-Chinese's vocab.txt and the port's rules."""
        return self.file.kind == VOCAB_TXT


def model_tokenizer(vocab: Path | None, tokenizer: Path | None) -> ModelTokenizer:
    """The tokenizer of `--vocab` or `--tokenizer` (exactly one of them)."""
    if (vocab is None) == (tokenizer is None):
        raise VocabError("pass --tokenizer MODEL_DIR (the model's checkpoint or build folder) or, for GPT2-Chinese, "
                         "--vocab VOCAB_TXT: one of the two")
    if vocab is not None:
        if vocab.suffix == ".json":
            raise VocabError(f"--vocab {vocab}: a tokenizer.json; pass it as --tokenizer {vocab}")
        file = read_tokenizer(vocab, "--vocab")
    else:
        file = read_tokenizer(_tokenizer_path(tokenizer), "--tokenizer")
    if file.kind == VOCAB_TXT:
        return ModelTokenizer(file, None, None, load_vocab(file.path, flag=None).token_to_id.get("[PAD]", 0))
    bos, eos, pad = _special_ids(file)
    return ModelTokenizer(file, bos, eos, pad if pad is not None else eos if eos is not None else 0)


def framing_of(mode: str, tokenizer: ModelTokenizer) -> ModelTokenizer:
    """The tokenizer with the ids that frame each document in MODE. Rolling mode frames each as
    lm-evaluation-harness 0.4.13 does (models/huggingface.py): its prefix token (`prefix_token_id`:
    the BOS, else the EOS), then the document as `tok_encode` gives it, `tokenizer.encode(text)`
    with the special tokens the post-processor adds (a Llama tokenizer.json's BOS: lm-eval scores
    that BOS after its prefix), or without them where the text starts with the prefix token's own
    text; nothing after. Stride mode frames the one joined text (joined.py)."""
    if mode != "rolling" or tokenizer.classic:
        return tokenizer
    prefix = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    if prefix is None:
        raise VocabError(f"{tokenizer.file.path}: --mode rolling puts the model's BOS (else EOS) token before each "
                         f"document, as lm-evaluation-harness does, and the {TOKENIZER_CONFIG} beside it names "
                         "neither; restore the model's " + TOKENIZER_CONFIG)
    from tokenizers import Tokenizer

    before, after = post_processor_ids(tokenizer.file.path)
    prefix_text = Tokenizer.from_file(str(tokenizer.file.path)).decode([prefix], skip_special_tokens=False)
    return replace(tokenizer, bos_id=prefix, eos_id=None, post_bos=before, post_eos=after,
                   plain_if_starts_with=prefix_text or None)


def post_processor_ids(path: Path) -> tuple[int | None, int | None]:
    """The special ids the tokenizer's post-processor puts before and after a text (what
    `tokenizer(text)` and `tokenizer.encode(text)` add in transformers), each one id or None."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    probe = "a"
    plain = tokenizer.encode(probe, add_special_tokens=False).ids
    framed = tokenizer.encode(probe, add_special_tokens=True).ids
    for at in range(len(framed) - len(plain) + 1):
        if framed[at:at + len(plain)] == plain:
            before, after = framed[:at], framed[at + len(plain):]
            break
    else:
        raise VocabError(f"{path}: its post-processor changes a text's own ids, which npueval cannot follow")
    if len(before) > 1 or len(after) > 1:
        raise VocabError(f"{path}: its post-processor adds {len(before)} token(s) before a text and {len(after)} "
                         "after it; npueval follows one at most on each side")
    return (before[0] if before else None), (after[0] if after else None)


def build_seq_len(tokenizer: Path | None) -> int | None:
    """The static length of the build folder `--tokenizer` names, or None (a checkpoint, a file)."""
    if tokenizer is None or not _is_build_folder(tokenizer):
        return None
    from npueval.build.manifest import BuildManifest

    manifest, _ = BuildManifest.read(tokenizer, flag="--tokenizer")
    return manifest.seq_len


def _is_build_folder(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file() and not (path / "config.json").is_file()


def _tokenizer_path(path: Path) -> Path:
    """A tokenizer file as it is; in a build folder the one its manifest names; in a checkpoint
    folder tokenizer.json, or vocab.txt for GPT-2 (GPT2-Chinese)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise VocabError(f"--tokenizer {path}: no such file or folder; pass the model's checkpoint or build folder, "
                         "or its tokenizer.json")
    if _is_build_folder(path):
        from npueval.build.manifest import BuildManifest

        manifest, _ = BuildManifest.read(path, flag="--tokenizer")
        return path / manifest.tokenizer
    return find_tokenizer(path, prefer_vocab_txt=_model_type(path) == "gpt2", flag="--tokenizer").path


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _special_ids(file: TokenizerFile) -> tuple[int | None, int | None, int | None]:
    """(BOS, EOS, PAD) ids from the tokenizer_config.json beside FILE; None where it names none."""
    from tokenizers import Tokenizer

    config_path = file.path.with_name(TOKENIZER_CONFIG)
    if not config_path.is_file():
        log.warning("%s: no %s beside it, so no BOS or EOS token: documents are joined with nothing between them",
                    file.path, TOKENIZER_CONFIG)
        return None, None, None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VocabError(f"{config_path}: not readable JSON ({exc}); restore the model's {TOKENIZER_CONFIG}") from None
    if not isinstance(config, dict):
        raise VocabError(f"{config_path}: a JSON object expected; restore the model's {TOKENIZER_CONFIG}")
    tokenizer = Tokenizer.from_file(str(file.path))
    ids = []
    for key in ("bos_token", "eos_token", "pad_token"):
        token = config.get(key)
        if isinstance(token, dict):  # an AddedToken: {"content": "<s>", "lstrip": false, …}
            token = token.get("content")
        if token is None:
            ids.append(None)
            continue
        if not isinstance(token, str) or tokenizer.token_to_id(token) is None:
            raise VocabError(f"{config_path}: {key} {token!r} is not a token of {file.path.name}; restore the "
                             f"model's {TOKENIZER_CONFIG} and {TOKENIZER_JSON} together")
        ids.append(tokenizer.token_to_id(token))
    return ids[0], ids[1], ids[2]
