"""Generated text and wiki_zh-layout corpora, seeded, for tests and benchmarks.

`hard_text` is made to break tokenizers: mixed scripts, full-width forms, emoji and ZWJ
sequences, control, format, private-use and unassigned code points, combining accents,
the final sigma, digits of many scripts, and special-token spellings ("[SEP]", "[mask]",
"[SE\\u200bP]"). `wiki_text` looks like Chinese Wikipedia running text.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

_TRICKY = (
    " \t\n\r\u3000\u00a0\u2028\u2029\x0b\x0c\x85\x1c\u200b\u200c\u200d\u2060\ufeff\u00ad"
    "\ue000\uf000\uf001\uf8ff\ufffd\x00\x7f\u0378\u0301\u0300\u0308\u0344"
    "ΑΣΣΑΣ σς ΌΣΟΣ İIıi ß ǅ ﬁ Å Ω K ①②²³½ ١٢٣ ０１２３ ＡＢＣａｂｃ！？，。；：「」『』"
    "éèêëàáâãäåçñaeiou😀👍🏽👨‍👩‍👧\U0001f9ea\U000e0001\U0010fffd"
    "\uf900\uf9ff\u3400\U00020000\U0002a700\U0002f800\u1fef\u037e\u0387`^$~"
)
_SPECIAL_SPELLINGS = (
    "[SEP]", "[MASK]", "[CLS]", "[UNK]", "[PAD]", "[sep]", "[mask]", "[Sep]",
    "[SE\u200bP]", "[CL\x01S]", " [UN\u00adK] ", "中[MA\u200bSK]1", "a[SE\u200bP]", "[SEP][SEP]",
)
_PUNCT = "，。、；：（）《》“”！？"


def hard_text(rng: random.Random, vocab_words: list[str], max_parts: int = 60) -> str:
    pools = (
        lambda: chr(rng.randint(0x4E00, 0x9FFF)),
        lambda: rng.choice(_TRICKY),
        lambda: rng.choice(_SPECIAL_SPELLINGS),
        lambda: chr(rng.randint(0, 0x10FFFF)),
        lambda: chr(rng.randint(0, 0x3000)),
        lambda: rng.choice(vocab_words),
        lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABC") for _ in range(rng.randint(1, 120))),
        lambda: str(rng.randint(0, 10**6)),
    )
    return "".join(rng.choice(pools)() for _ in range(rng.randint(0, max_parts)))


class WikiTextGen:
    """Chinese-Wikipedia-like paragraphs from a vocabulary: CJK with some Latin, digits, punctuation."""

    def __init__(self, vocab_tokens: list[str], seed: int = 0):
        self.rng = random.Random(seed)
        self.cjk = [w for w in vocab_tokens if len(w) == 1 and 0x4E00 <= ord(w) <= 0x9FFF] or ["中"]
        self.words = [w for w in vocab_tokens if w.isascii() and w.isalpha() and len(w) > 1] or ["abc"]

    def paragraph(self) -> str:
        rng, out = self.rng, []
        for _ in range(rng.randint(20, 200)):
            r = rng.random()
            if r < 0.86:
                out.append(rng.choice(self.cjk))
            elif r < 0.93:
                out.append(rng.choice(_PUNCT))
            elif r < 0.97:
                out.append(str(rng.randint(0, 2020)))
            else:
                out.append(" " + rng.choice(self.words) + " ")
        return "".join(out)

    def article(self) -> str:
        return "\n".join(self.paragraph() for _ in range(self.rng.randint(1, 8)))


#: GPT2-Chinese's vocabulary size (its vocab.txt is BERT-Chinese's).
BERT_CHINESE_SIZE = 21128


def bert_chinese_shaped_vocab(size: int = BERT_CHINESE_SIZE) -> list[str]:
    """A vocabulary of BERT-Chinese's shape and size, for benchmarks where the real one is not at
    hand: [PAD], [unused1…99], the four specials, ASCII, 13,500 CJK characters, then Latin words
    and ## pieces of random lowercase letters (seeded) up to `size` tokens."""
    rng = random.Random(21128)
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "<S>", "<T>"]
    tokens += [chr(c) for c in range(33, 127) if not chr(c).isupper()] + list(_PUNCT)
    tokens += [chr(c) for c in range(0x4E00, 0x4E00 + 13500)]
    seen = set(tokens)
    while len(tokens) < size:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8)))
        word = word if rng.random() < 0.5 else "##" + word
        if word not in seen:
            seen.add(word)
            tokens.append(word)
    return tokens


def folder_name(i: int) -> str:
    """AA, AB, …, AZ, BA, …: wiki_zh's subfolder names."""
    return chr(ord("A") + i // 26) + chr(ord("A") + i % 26)


#: Characters the classic tokenizer's cleaning removes, as Wikipedia text carries them, with a weight
#: each: zero-width space, left-to-right and right-to-left marks, zero-width joiner and non-joiner,
#: soft hyphen, byte order mark, word joiner, a C0 control, private use, unassigned.
REMOVED_IN_WIKI = (("\u200b", 30), ("\u200e", 15), ("\u200f", 10), ("\u200d", 5), ("\u200c", 5), ("\u00ad", 10),
                   ("\ufeff", 5), ("\u2060", 5), ("\x01", 5), ("\ue000", 5), ("\u0378", 5))


def with_removed_characters(text: str, rng: random.Random, article_rate: float = 0.6, most: int = 4) -> str:
    """TEXT, or with probability `article_rate` TEXT with 1 to `most` of REMOVED_IN_WIKI at random places."""
    if rng.random() >= article_rate:
        return text
    chars, weights = zip(*REMOVED_IN_WIKI)
    out = list(text)
    for _ in range(rng.randint(1, most)):
        out.insert(rng.randint(0, len(out)), rng.choices(chars, weights)[0])
    return "".join(out)


def dirty_copy(src: Path, dst: Path, seed: int = 0, article_rate: float = 0.6) -> None:
    """A copy of the wiki_zh corpus SRC in DST whose articles hold such characters (`with_removed_characters`)."""
    rng = random.Random(seed)
    for path in sorted(src.glob("*/wiki_*")):
        texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        write_jsonl(dst / path.relative_to(src), [with_removed_characters(t, rng, article_rate) for t in texts])


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for j, text in enumerate(texts):
            obj = {"id": str(j), "url": f"https://zh.wikipedia.org/wiki?curid={j}", "title": f"t{j}", "text": text}
            # Lone surrogates cannot be UTF-8: such a text is written with \u escapes.
            has_surrogates = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
            f.write(json.dumps(obj, ensure_ascii=has_surrogates) + "\n")
    return path


def write_wiki_corpus(root: Path, files: list[list[list[str]]]) -> list[Path]:
    """files[i][k] is the list of article texts of root/<folder i>/wiki_<k>."""
    return [
        write_jsonl(root / folder_name(i) / f"wiki_{k:02d}", texts)
        for i, folder in enumerate(files)
        for k, texts in enumerate(folder)
    ]


def generate_wiki_corpus(root: Path, vocab_tokens: list[str], target_bytes: int, seed: int = 0,
                         articles_per_file: int = 500) -> int:
    """A wiki_zh-layout corpus of about `target_bytes`, one file per folder; returns its size."""
    gen = WikiTextGen(vocab_tokens, seed)
    written = i = 0
    while written < target_bytes:
        path = write_jsonl(root / folder_name(i) / "wiki_00", [gen.article() for _ in range(articles_per_file)])
        written += path.stat().st_size
        i += 1
    return written
