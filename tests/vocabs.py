"""A small vocabulary of BERT-Chinese's layout, made here for the tests (never downloaded)."""

from __future__ import annotations

from pathlib import Path

# GPT2-Chinese's special ids: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103.
_LATIN_WORDS = ("the", "of", "and", "wiki", "china", "beijing", "nba", "ray", "npu", "token", "model")
_PIECES = ("##ς", "##σ", "##α", "##s", "##ing", "##ed", "##er", "##a", "##e", "##i", "##o", "##n", "##t", "##ab", "##c")


def small_vocab_tokens() -> list[str]:
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += ["<S>", "<T>"]
    tokens += [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    tokens += [*list("σςαβγδεωàéßıı́"), "０", "１", "①", "²", "½", "！", "，", "。", "、", "；", "：", "“", "”", "《",
               "》"]
    tokens += [chr(c) for c in range(0x4E00, 0x4E00 + 2500)]  # CJK, then unknown beyond
    tokens += [chr(c) for c in range(0x3400, 0x3400 + 50)] + ["\uf900", "\u8c48"]
    tokens += list(_LATIN_WORDS) + list(_PIECES) + ["😀"]
    tokens += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    seen, unique = set(), []
    for t in tokens:
        if t not in seen:
            seen.add(t)
            unique.append(t)
    return unique


def write_vocab(path: Path, tokens: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path
