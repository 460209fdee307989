"""The classic pure-Python BERT tokenizer that GPT2-Chinese uses: the test reference.

GPT2-Chinese (`tokenizations/tokenization_bert.py`) is a copy of the BERT tokenizer of
transformers 2.x with one change: digits are isolated like CJK characters. The port pins
transformers 2.5.1 and builds the tokenizer directly from vocab.txt, so:

1. special tokens ([UNK] [SEP] [PAD] [CLS] [MASK]) are cut out of the raw text first
   (case-sensitive), each remaining segment stripped; a whitespace-only text gives nothing;
2. per segment: control/format/unassigned characters removed, whitespace turned to spaces,
   CJK characters and `str.isdigit()` characters surrounded by spaces, split on whitespace;
3. per token (unless it is itself a special token): `str.lower()`, NFD, combining marks
   (category Mn) removed, punctuation split off;
4. greedy longest-match WordPiece with "##" continuations; [UNK] for a word that cannot be
   covered or is longer than 100 characters.

Written from that description as an independent reference for `npueval.eval.data.tokenizer`
(which runs on the Rust `tokenizers` library) and as the port's baseline in benchmarks.
Deliberately plain and slow.
"""

from __future__ import annotations

import unicodedata

SPECIAL_TOKENS = ("[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]")
MAX_CHARS_PER_WORD = 100


def load_vocab(path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f.readlines()):
            vocab[line.rstrip("\n")] = index
    return vocab


def _is_whitespace(ch: str) -> bool:
    if ch in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_chinese_char(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _whitespace_tokenize(text: str) -> list[str]:
    text = text.strip()
    return text.split() if text else []


class ClassicBertTokenizer:
    def __init__(self, vocab_path):
        self.vocab = load_vocab(vocab_path)
        self.unk_token = "[UNK]"

    # -- transformers 2.5.1 PreTrainedTokenizer.tokenize -------------------------------
    def tokenize(self, text: str) -> list[str]:
        if not text.strip():
            return []
        pieces = [text]
        for special in SPECIAL_TOKENS:
            next_pieces: list[str] = []
            for piece in pieces:
                if piece in SPECIAL_TOKENS:
                    next_pieces.append(piece)
                else:
                    next_pieces.extend(self._split_on_token(special, piece))
            pieces = next_pieces
        out: list[str] = []
        for piece in pieces:
            if piece in SPECIAL_TOKENS:
                out.append(piece)
            else:
                out.extend(self._tokenize(piece))
        return out

    @staticmethod
    def _split_on_token(tok: str, text: str) -> list[str]:
        result: list[str] = []
        parts = text.split(tok)
        for i, sub in enumerate(parts):
            sub = sub.strip()
            if i == 0 and not sub:
                result.append(tok)
            elif i == len(parts) - 1:
                if sub:
                    result.append(sub)
            else:
                if sub:
                    result.append(sub)
                result.append(tok)
        return result

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        unk = self.vocab.get(self.unk_token)
        return [self.vocab.get(t, unk) for t in tokens]

    def encode(self, text: str) -> list[int]:
        return self.convert_tokens_to_ids(self.tokenize(text))

    # -- GPT2-Chinese BertTokenizer._tokenize ------------------------------------------
    def _tokenize(self, text: str) -> list[str]:
        out: list[str] = []
        for token in self._basic_tokenize(text):
            out.extend(self._wordpiece(token))
        return out

    def _basic_tokenize(self, text: str) -> list[str]:
        text = self._clean_text(text)
        text = self._space_chinese_chars(text)
        split_tokens: list[str] = []
        for token in _whitespace_tokenize(text):
            if token not in SPECIAL_TOKENS:
                token = token.lower()
                token = self._strip_accents(token)
            split_tokens.extend(self._split_on_punc(token))
        return _whitespace_tokenize(" ".join(split_tokens))

    @staticmethod
    def _clean_text(text: str) -> str:
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            out.append(" " if _is_whitespace(ch) else ch)
        return "".join(out)

    @staticmethod
    def _space_chinese_chars(text: str) -> str:
        out = []
        for ch in text:
            if _is_chinese_char(ord(ch)) or ch.isdigit():
                out.extend((" ", ch, " "))
            else:
                out.append(ch)
        return "".join(out)

    @staticmethod
    def _strip_accents(text: str) -> str:
        text = unicodedata.normalize("NFD", text)
        return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")

    @staticmethod
    def _split_on_punc(text: str) -> list[str]:
        output: list[list[str]] = []
        start_new_word = True
        for ch in text:
            if _is_punctuation(ch):
                output.append([ch])
                start_new_word = True
            else:
                if start_new_word:
                    output.append([])
                start_new_word = False
                output[-1].append(ch)
        return ["".join(x) for x in output]

    def _wordpiece(self, text: str) -> list[str]:
        output: list[str] = []
        for token in _whitespace_tokenize(text):
            chars = list(token)
            if len(chars) > MAX_CHARS_PER_WORD:
                output.append(self.unk_token)
                continue
            sub_tokens: list[str] = []
            start = 0
            bad = False
            while start < len(chars):
                end = len(chars)
                found = None
                while start < end:
                    sub = "".join(chars[start:end])
                    if start > 0:
                        sub = "##" + sub
                    if sub in self.vocab:
                        found = sub
                        break
                    end -= 1
                if found is None:
                    bad = True
                    break
                sub_tokens.append(found)
                start = end
            output.extend([self.unk_token] if bad else sub_tokens)
        return output
