"""The decoder-only model families `npueval build` takes, by config.json's `model_type`
(docs/design.md, "Building a model").

GPT-2 is GPT2-Chinese's family (a config.json without `model_type`, as transformers 2.x wrote
them, is one): it is exported as the port exports it (build/export.py) and its graph passes find
their patterns. Llama, Qwen2 and Mistral (RoPE, RMSNorm, SwiGLU, grouped-query attention, tied
or untied LM heads) are exported with transformers' eager attention, without a key/value cache.
The table names each family's transformers classes and the config keys of its shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from npueval.core.errors import CheckpointError


@dataclass(frozen=True)
class Family:
    model_type: str
    config_class: str  # transformers' classes, imported only when a model is built
    model_class: str
    layers: str  # config keys
    width: str
    heads: str
    positions: str
    port_export: bool = False  # GPT2-Chinese's export: the port's attention and key/value outputs

    def shape(self, config: dict) -> str:
        kv = config.get("num_key_value_heads")
        heads = f"{config[self.heads]} heads" + (f" ({kv} key/value)" if kv and kv != config[self.heads] else "")
        return (f"{self.model_type}, {config[self.layers]} layers, {config[self.width]} wide, {heads}, "
                f"vocab {config['vocab_size']}")


GPT2 = Family("gpt2", "GPT2Config", "GPT2LMHeadModel", "n_layer", "n_embd", "n_head", "n_positions",
              port_export=True)
_HF_DECODER = ("num_hidden_layers", "hidden_size", "num_attention_heads", "max_position_embeddings")
FAMILIES = {f.model_type: f for f in (
    GPT2,
    Family("llama", "LlamaConfig", "LlamaForCausalLM", *_HF_DECODER),
    Family("qwen2", "Qwen2Config", "Qwen2ForCausalLM", *_HF_DECODER),
    Family("mistral", "MistralConfig", "MistralForCausalLM", *_HF_DECODER),
)}


def family_of(raw: dict, path: Path) -> Family:
    """The family config.json (read as RAW from PATH) describes."""
    model_type = raw.get("model_type", GPT2.model_type)
    if model_type not in FAMILIES:
        raise CheckpointError(f"{path}: model_type {model_type!r} is not a family npueval builds; it builds "
                              f"{', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def check_shape(family: Family, config: dict, path: Path) -> None:
    """The config keys of the family's shape are positive integers that fit together."""
    for key in ("vocab_size", family.width, family.layers, family.heads, family.positions):
        if not isinstance(config.get(key), int) or isinstance(config.get(key), bool) or config[key] < 1:
            raise CheckpointError(f"{path}: {key!r} is missing or not a positive integer; it must describe a "
                                  f"{family.model_type} model")
    if config[family.width] % config[family.heads]:
        raise CheckpointError(f"{path}: {family.width} {config[family.width]} is not a multiple of {family.heads} "
                              f"{config[family.heads]}")
    kv = config.get("num_key_value_heads")
    if kv is not None and (not isinstance(kv, int) or kv < 1 or config[family.heads] % kv):
        raise CheckpointError(f"{path}: num_key_value_heads {kv!r} does not divide {family.heads} "
                              f"{config[family.heads]}")
