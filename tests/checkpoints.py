"""Tiny GPT-2 checkpoints in GPT2-Chinese's layout, made here with seeded random weights."""

from __future__ import annotations

import json
from pathlib import Path

from vocabs import small_vocab_tokens, write_vocab

TINY = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64}


def tiny_model(vocab_size: int, seed: int = 0, **shape):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, bos_token_id=101, eos_token_id=102, attn_implementation="eager",
                        **{**TINY, **shape})
    return GPT2LMHeadModel(config).eval()


def make_checkpoint(folder: Path, weights: str = "safetensors", old_config: bool = True, seed: int = 0,
                    vocab_tokens: list[str] | None = None, **shape) -> Path:
    """A checkpoint folder: config.json (transformers 2.x keys if `old_config`), vocab.txt and
    weights as `safetensors`, `sharded` safetensors, `bin` (pytorch_model.bin) or `bare-bin`
    (GPT2Model keys, without the "transformer." prefix, as some GPT2-Chinese saves have)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tokens = vocab_tokens or small_vocab_tokens()
    write_vocab(folder / "vocab.txt", tokens)
    dims = {**TINY, **shape}
    model = tiny_model(len(tokens), seed, **shape)
    if old_config:  # GPT2-Chinese's config.json (transformers 2.x)
        config = {"initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "n_ctx": dims["n_positions"],
                  "n_embd": dims["n_embd"], "n_head": dims["n_head"], "n_layer": dims["n_layer"],
                  "n_positions": dims["n_positions"], "vocab_size": len(tokens)}
    else:
        config = {**model.config.to_dict(), "architectures": ["GPT2LMHeadModel"]}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    if weights == "safetensors":
        save_file(state, folder / "model.safetensors")
    elif weights == "sharded":
        keys = sorted(state)
        half = len(keys) // 2
        shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
        for name, names in shards.items():
            save_file({k: state[k] for k in names}, folder / name)
        index = {"metadata": {}, "weight_map": {k: n for n, names in shards.items() for k in names}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    elif weights == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    elif weights == "bare-bin":
        torch.save({k.removeprefix("transformer."): v for k, v in state.items()}, folder / "pytorch_model.bin")
    else:
        raise ValueError(weights)
    return folder
