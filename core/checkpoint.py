"""A Hugging Face checkpoint folder (GPT2-Chinese, or a Llama, Qwen2 or Mistral family model):
checked, then loaded without running its code.

The folder holds config.json (its `model_type` names the family: core/families.py), the model's
tokenizer (GPT2-Chinese's vocab.txt, or tokenizer.json: the data side checks its sha256 against
the model's) and weights as model.safetensors, sharded safetensors with
model.safetensors.index.json, or pytorch_model.bin. A .bin is loaded with
`torch.load(weights_only=True)`: a pickle that needs more than tensors is refused, and its
code never runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from npueval.core.errors import CheckpointError, not_a_folder
from npueval.core.tokenizer_file import VOCAB_TXT, TokenizerFile, find_tokenizer
from npueval.core.vocab import Vocab, load_vocab

from .families import GPT2, Family, check_shape, family_of

log = logging.getLogger(__name__)

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
#: transformers 2.x names (GPT2-Chinese's configs) → today's GPT2Config names.
_OLD_CONFIG_KEYS = {"n_ctx": "n_positions"}
#: Buffers old transformers saved with the weights; today's models make them themselves.
_IGNORED_BUFFERS = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    family: Family
    config: dict = field(repr=False)  # the family's config keyword arguments
    tokenizer: TokenizerFile
    weight_files: tuple[Path, ...]
    weights_sha256: str  # over the weight files' bytes, in order ("" where not hashed)

    @property
    def shape(self) -> str:
        return self.family.shape(self.config)

    @property
    def positions(self) -> int:
        return int(self.config[self.family.positions])

    @property
    def vocab(self) -> Vocab:
        """GPT2-Chinese's vocab.txt, for what needs its tokens (the bundled sample)."""
        if self.tokenizer.kind != VOCAB_TXT:
            raise CheckpointError(f"CHECKPOINT {self.folder}: its tokenizer is {self.tokenizer.path.name}, not a "
                                  "vocab.txt")
        return load_vocab(self.tokenizer.path, flag=None)


def open_checkpoint(folder: str | Path, hash_weights: bool = True) -> Checkpoint:
    """Check the folder's files and read its config and tokenizer; loads no weights. Without
    `hash_weights` (a run that only loads them) weights_sha256 is ""."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"CHECKPOINT {folder}: {not_a_folder(folder)}; pass the folder with config.json and the weights")
    raw = _read_json(folder / "config.json")
    family = family_of(raw, folder / "config.json")
    if family is GPT2 and not (folder / VOCAB_TXT).is_file() and not (folder / "tokenizer.json").is_file():
        raise CheckpointError(
            f"CHECKPOINT {folder}: no vocab.txt; copy the model's vocab.txt (BERT-Chinese WordPiece) into the folder"
        )
    tokenizer = find_tokenizer(folder, prefer_vocab_txt=family is GPT2)
    config = _config(family, raw, folder / "config.json", tokenizer)
    files = _weight_files(folder)
    digest = hashlib.sha256()
    for path in files if hash_weights else ():
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return Checkpoint(folder, family, config, tokenizer, files, digest.hexdigest() if hash_weights else "")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; a checkpoint needs its config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); restore the checkpoint's config.json") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a model config (a JSON object); restore the checkpoint's config.json")
    return raw


def _config(family: Family, raw: dict, path: Path, tokenizer: TokenizerFile) -> dict:
    if family is GPT2:
        config = {_OLD_CONFIG_KEYS.get(k, k): v for k, v in raw.items() if k not in ("architectures", "model_type")}
        if "n_ctx" in raw and "n_positions" in raw:
            config["n_positions"] = raw["n_positions"]
    else:
        config = {k: v for k, v in raw.items() if k not in ("architectures", "model_type", "auto_map")}
    check_shape(family, config, path)
    if config["vocab_size"] < tokenizer.size:
        raise CheckpointError(
            f"{path}: vocab_size {config['vocab_size']} is smaller than {tokenizer.path.name}'s {tokenizer.size} "
            f"tokens; the config and {tokenizer.path.name} belong to different models"
        )
    if family is GPT2 and tokenizer.kind == VOCAB_TXT:
        # GPT2Config's default bos/eos (50256) lie outside a BERT-Chinese vocabulary; generation is
        # not our business, so point them at [CLS] / [SEP] unless the config says otherwise.
        vocab = load_vocab(tokenizer.path, flag=None)
        for key, token_id in (("bos_token_id", vocab.cls_id), ("eos_token_id", vocab.sep_id)):
            if not isinstance(config.get(key), int) or not 0 <= config[key] < config["vocab_size"]:
                config[key] = token_id
    return config


def _weight_files(folder: Path) -> tuple[Path, ...]:
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc}); restore it from the checkpoint") from None
        shards = tuple(folder / name for name in sorted(set(weight_map.values())))
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise CheckpointError(f"{index}: names shard(s) {', '.join(missing)} that are not in {folder}")
        return shards
    for name in (SAFETENSORS, PYTORCH_BIN):
        if (folder / name).is_file():
            return (folder / name,)
    raise CheckpointError(
        f"CHECKPOINT {folder}: no weights; expected {SAFETENSORS}, {SAFETENSORS_INDEX} with its shards, "
        f"or {PYTORCH_BIN}"
    )


def load_state_dict(ckpt: Checkpoint) -> dict:
    """The weights as tensors; a pickle that needs code to load is refused, never run."""
    import pickle

    import torch

    state: dict = {}
    for path in ckpt.weight_files:
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                state.update(load_file(path))
            except SafetensorError as exc:
                raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
            continue
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # No hint to unpickle it anywhere (torch's own message gives one): loading it runs its code.
            raise CheckpointError(
                f"{path}: refused, it needs more than tensors to load ({_unpickler_refusal(exc)}), and a pickle "
                "like this can run code: npueval never loads one, and it must not be loaded here. Get the "
                "weights as model.safetensors instead: ask the model's publisher for it, or convert the file "
                "with a trusted tool in a sandbox you then throw away"
            ) from None
        except (RuntimeError, EOFError, OSError) as exc:
            raise CheckpointError(f"{path}: not a readable PyTorch file ({exc})") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise CheckpointError(f"{path}: holds {type(loaded).__name__}, not a state dict of tensors")
        state.update(loaded)
    return state


def _unpickler_refusal(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused ("Unsupported global: GLOBAL io.open was not an
    allowed global by default"), without the rest of its message, which says how to load
    the file anyway."""
    found = re.search(r"WeightsUnpickler error: (.*?)(?:\.\s|\.?$)", str(exc), re.MULTILINE)
    return re.sub(r"\x1b\[[0-9;]*m", "", found.group(1)) if found else type(exc).__name__


def load_model(ckpt: Checkpoint):
    """The family's causal LM in float32, eval mode, with the checkpoint's weights checked against its config."""
    import torch
    import transformers

    family = ckpt.family
    config_class, model_class = getattr(transformers, family.config_class), getattr(transformers, family.model_class)
    # Eager attention: GPT-2's graph then has the explicit QK^T, scale, mask and softmax of the
    # port's export, which the NPU graph passes rewrite (SDPA would also need opset 14).
    model = model_class(config_class(**ckpt.config, attn_implementation="eager")).float().eval()
    state = {_model_key(family, k): v for k, v in load_state_dict(ckpt).items() if not k.endswith(_IGNORED_BUFFERS)}
    expected = model.state_dict()
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = sorted(set(expected) - set(state) - tied)
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which the config does not"
        raise CheckpointError(
            f"{ckpt.folder}: config.json ({ckpt.shape}) and the weights do not match: the weights {what} "
            f"({len(missing)} missing, {len(unexpected)} unexpected); use the config.json saved with these weights"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{ckpt.folder}: config.json ({ckpt.shape}) and the weights do not match: {key} is "
                f"{tuple(tensor.shape)} in the weights, {tuple(expected[key].shape)} by the config"
            )
    with torch.no_grad():
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    log.info("loaded %s from %s", ckpt.shape, ckpt.folder)
    return model


def _model_key(family: Family, key: str) -> str:
    """GPT2Model checkpoints lack the "transformer." prefix of GPT2LMHeadModel's keys."""
    if family is not GPT2:
        return key
    return key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"
