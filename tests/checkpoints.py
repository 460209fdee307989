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


#: Tiny shapes of the other families: grouped-query attention (4 heads, 2 key/value heads).
TINY_HF = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "max_position_embeddings": 128}
_CONFIGS = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "mistral": "MistralConfig"}
_MODELS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
_TRAINING_TEXT = ("数据并行的评测在每一块芯片上运行同一个模型。The tokenizer travels with the model; "
                  "every token of the stream is scored once, in order. 北京是中国的首都，上海是最大的城市。") * 4


#: The pre-tokenizing regexes of Llama 3 and Qwen2's tokenizer.json (a Split before a ByteLevel without its own).
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
#: write_tokenizer_json's styles: how the model families' tokenizer.json pre-tokenize.
TOKENIZER_STYLES = ("gpt2", "llama3", "qwen2", "metaspace", "llama2")


def write_tokenizer_json(folder: Path, vocab_size: int = 300, style: str = "gpt2", text: str | None = None,
                         eot: str | None = None) -> Path:
    """A BPE tokenizer.json trained here on a few sentences, with <s> and </s> as BOS and EOS in
    tokenizer_config.json, as Llama-family checkpoints carry them; with EOT (a byte-level style),
    GPT-2's layout instead: EOT (id 0) is the only special token, and BOS, EOS and UNK alike.
    STYLE is how it pre-tokenizes:
    gpt2, byte-level with GPT-2's regex; llama3 and qwen2, byte-level after a Split by their
    regex (qwen2 with NFC); metaspace, Llama 2's newer SentencePiece layout (Metaspace with
    prepend_scheme "first" and no split, byte fallback); llama2, its older one (no pre-tokenizer,
    the normalizer Prepend("▁") then Replace(" ", "▁")). TEXT: what it is trained on, if not those sentences."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    special = [eot] if eot else ["<unk>", "<s>", "</s>"]
    if style in ("metaspace", "llama2"):
        assert eot is None, "byte fallback needs <unk>"
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=True)
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size + 256, show_progress=False,
                                      special_tokens=special + [f"<0x{b:02X}>" for b in range(256)])
    else:
        tokenizer = Tokenizer(models.BPE())
        if style == "gpt2":
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        else:
            regex = LLAMA3_REGEX if style == "llama3" else QWEN2_REGEX
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
            if style == "qwen2":
                tokenizer.normalizer = normalizers.NFC()
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([_TRAINING_TEXT if text is None else text], trainer)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    tokenizer.save(str(path))
    if style in ("metaspace", "llama2"):  # trained on words; the checkpoints' files tokenize a text as one
        config = json.loads(path.read_text(encoding="utf-8"))
        if style == "metaspace":
            config["pre_tokenizer"]["split"] = False
        else:
            config["pre_tokenizer"] = None
            config["normalizer"] = {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u2581"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    config = {"bos_token": "<s>", "eos_token": "</s>"}
    if eot:
        config = {"bos_token": eot, "eos_token": eot, "unk_token": eot}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return path


def tokenizer_folder(folder: Path) -> Path:
    """A Llama model folder with only what `prepare --tokenizer` reads: write_tokenizer_json's
    tokenizer.json and tokenizer_config.json, and config.json's model_type."""
    write_tokenizer_json(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def tiny_hf_model(family: str, vocab_size: int, seed: int = 0, tie: bool = False, **shape):
    import torch
    import transformers

    torch.manual_seed(seed)
    config = getattr(transformers, _CONFIGS[family])(vocab_size=vocab_size, tie_word_embeddings=tie, bos_token_id=1,
                                                     eos_token_id=2, attn_implementation="eager",
                                                     **{**TINY_HF, **shape})
    model = getattr(transformers, _MODELS[family])(config).eval()
    with torch.no_grad():  # RMSNorm weights start at 1: random ones exercise them
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def make_hf_checkpoint(folder: Path, family: str, seed: int = 0, tie: bool = False, **shape) -> Path:
    """A Hugging Face checkpoint folder of FAMILY (llama, qwen2, mistral): config.json with its
    model_type, model.safetensors (no lm_head.weight when `tie`), tokenizer.json and
    tokenizer_config.json. The config's vocab is the tokenizer's rounded up to 64, as Qwen2's is."""
    from safetensors.torch import save_file

    write_tokenizer_json(folder)
    from tokenizers import Tokenizer

    size = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    model = tiny_hf_model(family, -(-size // 64) * 64, seed, tie, **shape)
    config = {**model.config.to_dict(), "architectures": [_MODELS[family]]}
    config.pop("attn_implementation", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tie and k == "lm_head.weight")}
    save_file(state, folder / "model.safetensors")
    return folder


#: GPT-2's end-of-text token, its BOS and EOS in one.
GPT2_EOT = "<|endoftext|>"
#: A tiny GPT-2 of the Hugging Face layout: long enough for windows of 512.
TINY_GPT2_HF = {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 512}


def make_gpt2_hf_checkpoint(folder: Path, seed: int = 0, **shape) -> Path:
    """A GPT-2 checkpoint folder as the Hub has them (openai-community/gpt2), not GPT2-Chinese's:
    config.json (model_type gpt2, GPT2LMHeadModel), model.safetensors with tied embeddings (no
    lm_head.weight), a byte-level BPE tokenizer.json and no vocab.txt; GPT2_EOT is BOS and EOS.
    The config's vocab is exactly the tokenizer's, as GPT-2's 50257 is."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    write_tokenizer_json(folder, eot=GPT2_EOT)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    eot = tokenizer.token_to_id(GPT2_EOT)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=tokenizer.get_vocab_size(with_added_tokens=True), bos_token_id=eot,
                        eos_token_id=eot, attn_implementation="eager", **{**TINY_GPT2_HF, **shape})
    model = GPT2LMHeadModel(config).eval()
    config = {**model.config.to_dict(), "architectures": ["GPT2LMHeadModel"]}
    config.pop("attn_implementation", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
              folder / "model.safetensors")
    return folder


def add_bos_post_processor(folder: Path) -> Path:
    """FOLDER's tokenizer.json made to prepend its BOS (tokenizer_config.json's) to every
    encoding with special tokens, as Llama 2's and Llama 3's tokenizer.json do (TemplateProcessing)."""
    from tokenizers import Tokenizer, processors

    bos = json.loads((folder / "tokenizer_config.json").read_text())["bos_token"]
    path = folder / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    tokenizer.save(str(path))
    return folder
