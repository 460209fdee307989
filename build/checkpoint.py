"""A GPT2-Chinese / Hugging Face checkpoint folder: checked, then loaded without running its code.

The folder holds config.json, vocab.txt (required: the data side checks its sha256 against
the model's) and weights as model.safetensors, sharded safetensors with
model.safetensors.index.json, or pytorch_model.bin. A .bin is loaded with
`torch.load(weights_only=True)`: a pickle that needs more than tensors is refused, and its
code never runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from npueval.core.errors import CheckpointError, first_line, not_a_folder
from npueval.core.vocab import Vocab, load_vocab

log = logging.getLogger(__name__)

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
#: transformers 2.x names (GPT2-Chinese's configs) → today's GPT2Config names.
_OLD_CONFIG_KEYS = {"n_ctx": "n_positions"}
#: Buffers old transformers saved with the weights; today's GPT2 makes them itself.
_IGNORED_BUFFERS = (".attn.bias", ".attn.masked_bias")


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    config: dict = field(repr=False)  # GPT2Config keyword arguments
    vocab: Vocab = field(repr=False)
    weight_files: tuple[Path, ...]
    weights_sha256: str  # over the weight files' bytes, in order

    @property
    def shape(self) -> str:
        c = self.config
        return f"{c['n_layer']} layers, {c['n_embd']} wide, {c['n_head']} heads, vocab {c['vocab_size']}"


def open_checkpoint(folder: str | Path) -> Checkpoint:
    """Check the folder's files and read its config and vocab; loads no weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"CHECKPOINT {folder}: {not_a_folder(folder)}; pass the folder with config.json and the weights")
    vocab_path = folder / "vocab.txt"
    if not vocab_path.is_file():
        raise CheckpointError(
            f"CHECKPOINT {folder}: no vocab.txt; copy the model's vocab.txt (BERT-Chinese WordPiece) into the folder"
        )
    vocab = load_vocab(vocab_path, flag=None)  # CHECKPOINT/vocab.txt: build has no --vocab
    config = _read_config(folder / "config.json", vocab)
    files = _weight_files(folder)
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return Checkpoint(folder, config, vocab, files, digest.hexdigest())


def _read_config(path: Path, vocab: Vocab) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; a GPT-2 checkpoint needs its config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); restore the checkpoint's config.json") from None
    config = {_OLD_CONFIG_KEYS.get(k, k): v for k, v in raw.items() if k not in ("architectures", "model_type")}
    if "n_ctx" in raw and "n_positions" in raw:
        config["n_positions"] = raw["n_positions"]
    for key in ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions"):
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise CheckpointError(f"{path}: {key!r} is missing or not a positive integer; it must describe a GPT-2")
    if config["n_embd"] % config["n_head"]:
        raise CheckpointError(f"{path}: n_embd {config['n_embd']} is not a multiple of n_head {config['n_head']}")
    if config["vocab_size"] < vocab.size:
        raise CheckpointError(
            f"{path}: vocab_size {config['vocab_size']} is smaller than vocab.txt's {vocab.size} tokens; "
            "the config and vocab.txt belong to different models"
        )
    # GPT2Config's default bos/eos (50256) lie outside a BERT-Chinese vocabulary; generation is
    # not our business, so point them at [CLS] / [SEP] unless the config says otherwise.
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
            raise CheckpointError(
                f"{path}: refused, it needs more than tensors to load "
                f"({first_line(exc) or type(exc).__name__}); npueval never runs code "
                "from a checkpoint. Convert it once, on a machine you trust, with "
                "`python -c \"import torch, safetensors.torch as st; "
                "st.save_file(torch.load('pytorch_model.bin', weights_only=False), 'model.safetensors')\"`"
            ) from None
        except (RuntimeError, EOFError, OSError) as exc:
            raise CheckpointError(f"{path}: not a readable PyTorch file ({exc})") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise CheckpointError(f"{path}: holds {type(loaded).__name__}, not a state dict of tensors")
        state.update(loaded)
    return state


def load_model(ckpt: Checkpoint):
    """GPT2LMHeadModel in float32, eval mode, with the checkpoint's weights checked against its config."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    # Eager attention: its graph has the explicit QK^T, scale, mask and softmax of the port's
    # export, which the NPU graph passes rewrite (SDPA would also need opset 14).
    model = GPT2LMHeadModel(GPT2Config(**ckpt.config, attn_implementation="eager")).float().eval()
    state = {_model_key(k): v for k, v in load_state_dict(ckpt).items() if not k.endswith(_IGNORED_BUFFERS)}
    expected = model.state_dict()
    tied = {"lm_head.weight"}  # tied to transformer.wte.weight
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
    log.info("loaded %s (%s) from %s", "GPT-2", ckpt.shape, ckpt.folder)
    return model


def _model_key(key: str) -> str:
    """GPT2Model checkpoints lack the "transformer." prefix of GPT2LMHeadModel's keys."""
    return key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"
