"""Where a long document can be cut so that a tokenizer.json gives its pieces, end to end, the
ids and character offsets it gives the whole.

While the `tokenizers` library tokenizes a text it holds some 220 to 400 bytes a character (the
normalized string and its alignments, the pre-tokens, BPE's words, the Encoding and the Python
lists made of it): one 20 MB line of Chinese took 2.2 GB. framing.py tokenizes a long document in
pieces, cut only where the rules below prove the result unchanged. A cut at character p starts
the next piece with text[p]. The rules hold for these configurations, derived from what their
parts do (tokenizers 0.2x: added_vocabulary.rs, pre_tokenizers/, normalizers/, models/bpe/); for
any other tokenizer nothing is cut.

In every case: no truncation or padding (they act on a whole encoding); a BPE model without
dropout; added tokens that strip nothing (lstrip, rstrip, single_word false) and hold no
whitespace, so that no match of one holds the whitespace beside a cut, and the leftmost-longest
matches of the whole, none of which spans a cut, are those of its pieces; a post-processor that
does not trim the first token's offsets apart from the others' (ByteLevel or RobertaProcessing
with both trim_offsets and add_prefix_space do).

1. ByteLevel with its (GPT-2's) regex, or Split by GPT-2's regex then ByteLevel without one; no
   normalizer, or NFC: before " ", "\\t", "\\n" or "\\r" that follows a character that is no
   whitespace. Each branch of the regex that holds such a character holds whitespace only as its
   optional leading " ", so the pre-token of text[p - 1] ends at p; no branch tried from before p
   reads past p but to stop there, and none looks behind: the pre-tokens on either side are the
   whole's. With add_prefix_space on ByteLevel alone, only before " ": a piece starting with
   anything else would get a space put before it. NFC composes nothing across these cuts (no
   composition takes whitespace, or anything after a line break).
2. Split by Llama 3's or Qwen2's regex, then ByteLevel without one; no normalizer, or NFC: before
   " " or "\\t" after a character that is no whitespace (their branch
   ` ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*` keeps the line breaks after punctuation, so not before those),
   and before a character that is no whitespace after "\\n" or "\\r" (the branch `\\s*[\\r\\n]+`
   ends every run of whitespace that ends in a line break; `\\s+(?!\\S)`, which looks past p, is
   tried after it, so never on such a run).
3. Metaspace, no normalizer: before " " after a character that is neither " " nor the
   replacement r. " " becomes r, so each piece after the first starts with r and gets none put
   before it, whatever prepend_scheme says. With split, r starts a pre-token. Without, the whole
   document is one BPE word: then only where BPE has no continuing_subword_prefix,
   end_of_word_suffix or ignore_merges (each treats a word's ends apart), r is a token (no
   unknown to fuse with its neighbour), and no merge joins a token that does not end in r to one
   that starts with r: no merge can then cross the cut, and BPE merges each side as it does in
   the whole. Likewise before "\\n" or "\\r" after a character that is neither a line break, " "
   nor r, where the line break is a token (or has a byte token) no merge joins to a token ending
   in another character; the pieces after the first then go through the tokenizer with
   prepend_scheme "never" (the whole puts r only at its start), so not with "always" (which
   puts it after every added token too).
4. No pre-tokenizer and the normalizer Prepend(r) then Replace(" ", r) (Llama 2's and Mistral's
   older tokenizer.json): as 3 without split, with the pieces after the first tokenized without
   the Prepend, which the whole has only at its start; so only after the last added token in the
   document (a text after an added token gets a Prepend of its own), with no added token that
   holds r.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

#: A character that no regex engine takes for whitespace: not Python's (a superset of Unicode's
#: White_Space, Oniguruma's \s) nor one that some Unicode version or engine did.
_NOT_SPACE = r"[^\s\u180e\u200b-\u200d\u2060\ufeff]"
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")


@dataclass(frozen=True)
class Cuts:
    """Where one tokenizer.json's texts can be cut (the module's rules)."""

    at: re.Pattern | None  # a match starts at each safe cut; None: nowhere
    places: str  # where that is, or why nowhere, in words
    continuation: str | None = None  # rule 4: the tokenizer.json of every piece after the first
    added: tuple[str, ...] = ()  # rule 4: the added tokens' texts, which only the first piece may hold

    def starts(self, text: str, every: int) -> list[int]:
        """Where TEXT's pieces start: 0, then each time the first safe cut at least EVERY
        characters after the last one."""
        starts = [0]
        if self.at is None or len(text) <= every:
            return starts
        # Rule 4: past the end of the last added token (the text right after one is prepended to).
        floor = max((text.rfind(t) + len(t) + 1 for t in self.added if t and t in text), default=0)
        while (found := self.at.search(text, max(starts[-1] + every, floor))) is not None:
            starts.append(found.start())
        return starts


def cuts_for(tokenizer_json: str) -> Cuts:
    """The cuts of a tokenizer.json's text."""
    try:
        return _cuts(json.loads(tokenizer_json))
    except _Nowhere as exc:
        return Cuts(None, f"this tokenizer.json cannot be cut: {exc}")


class _Nowhere(Exception):
    """Why a tokenizer.json is not one whose cuts are known."""


def _cuts(config: dict) -> Cuts:
    for key in ("truncation", "padding"):
        if config.get(key) is not None:
            raise _Nowhere(f"it sets {key}")
    model = config.get("model") or {}
    if model.get("type") != "BPE":
        raise _Nowhere(f"its model is {model.get('type')}, not BPE")
    if model.get("dropout") not in (None, 0, 0.0):
        raise _Nowhere("its BPE has dropout")
    added = [t.get("content", "") for t in config.get("added_tokens") or []]
    for token in config.get("added_tokens") or []:
        if token.get("lstrip") or token.get("rstrip") or token.get("single_word") or any(
                c.isspace() for c in token.get("content", " ")):
            raise _Nowhere(f"its added token {token.get('content')!r} strips or holds whitespace")
    _check_post_processor(config.get("post_processor"))

    normalizer, pre = config.get("normalizer"), _unwrap(config.get("pre_tokenizer"))
    by_regex = _by_regex(pre)
    if by_regex is not None:
        if normalizer is not None and normalizer.get("type") != "NFC":
            raise _Nowhere(f"its normalizer is {normalizer.get('type')}")
        return by_regex
    if pre is not None and pre.get("type") == "Metaspace" and normalizer is None:
        r, split = pre.get("replacement", "\u2581"), pre.get("split", True)
        scheme = pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never")
        if scheme == "always":  # each text after an added token gets r, so only cuts where pieces start with r
            return _sentencepiece(None, model, r, split, line_breaks=False)
        never = {k: v for k, v in pre.items() if k != "add_prefix_space"} | {"prepend_scheme": "never"}
        return _sentencepiece(None if scheme == "never" else config | {"pre_tokenizer": never}, model, r, split,
                              line_breaks=True)
    if pre is None and _prepend_replace(normalizer) is not None:
        r = _prepend_replace(normalizer)
        if any(r in t for t in added):
            raise _Nowhere(f"an added token holds {r!r}")
        cuts = _sentencepiece(config | {"normalizer": normalizer["normalizers"][1]}, model, r, split=False,
                              line_breaks=True)
        return Cuts(cuts.at, cuts.places, cuts.continuation, tuple(added))
    raise _Nowhere(f"its pre-tokenizer {_describe(config.get('pre_tokenizer'))} with normalizer "
                   f"{_describe(normalizer)} is not one whose cuts are known")


def _by_regex(pre: dict | None) -> Cuts | None:
    """Rules 1 and 2, or None where PRE is not a regex split of theirs."""
    if pre is None:
        return None
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        if pre.get("add_prefix_space", True):
            return Cuts(re.compile(f"(?<={_NOT_SPACE}) "), "before a space that follows other characters")
        return Cuts(re.compile(f"(?<={_NOT_SPACE})[ \t\n\r]"), "before whitespace that follows other characters")
    parts = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not parts or len(parts) != 2:
        return None
    split, byte_level = parts
    if (split.get("type") != "Split" or split.get("behavior") != "Isolated" or split.get("invert")
            or byte_level.get("type") != "ByteLevel" or byte_level.get("use_regex", True)):
        return None
    pattern = (split.get("pattern") or {}).get("Regex")
    if pattern == GPT2_REGEX:
        return Cuts(re.compile(f"(?<={_NOT_SPACE})[ \t\n\r]"), "before whitespace that follows other characters")
    if pattern in (LLAMA3_REGEX, QWEN2_REGEX):
        return Cuts(re.compile(f"(?<={_NOT_SPACE})[ \t]|(?<=[\r\n]){_NOT_SPACE}"),
                    "before a space or tab after other characters, or after a line break")
    raise _Nowhere("its Split pattern is not one whose cuts are known")


def _sentencepiece(continuation: dict | None, model: dict, r: str, split: bool, line_breaks: bool) -> Cuts:
    """Rules 3 and 4: before " " (r) after a character that is neither " " nor r, where the
    pre-tokenizer splits there (SPLIT) or no merge can cross; with LINE_BREAKS, before "\\n" or
    "\\r" after a character that is neither a line break, " " nor r, where no merge can cross.
    The pieces after the first go through CONTINUATION (a tokenizer.json; None: the same)."""
    alternatives, places = [], []
    why_not = None if split else _joins(model, r, {r})
    if why_not is None:
        alternatives.append(f"(?<=[^ {re.escape(r)}]) ")
        places.append("before a space after another character")
    breaks = "".join(c for c in "\n\r" if line_breaks and _joins(model, c, {"\n", "\r", r}) is None)
    if breaks:
        alternatives.append(f"(?<=[^\\r\\n {re.escape(r)}])[{breaks}]")
        places.append("before a line break after another character")
    if not alternatives:
        raise _Nowhere(why_not)
    return Cuts(re.compile("|".join(alternatives)), ", or ".join(places),
                None if continuation is None else json.dumps(continuation, ensure_ascii=False))


def _joins(model: dict, c: str, ends: set[str]) -> str | None:
    """Why BPE may join the symbol of C (r standing for " ") to the one before it in a word,
    where that one ends in a character outside ENDS (the text's character before the cut, a
    byte token's ">" or the unknown token's last); None: it never does."""
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            return f"its BPE has a {key}"
    if model.get("ignore_merges"):
        return "its BPE ignores merges for words in its vocabulary"
    vocab = model.get("vocab") or {}
    symbol = c if c in vocab else f"<0x{ord(c):02X}>" if model.get("byte_fallback") else None
    if symbol not in vocab:  # an unknown, fused with an unknown before it
        return f"{c!r} is not one of its tokens"
    unk = model.get("unk_token") or ""
    if unk[-1:] in ends:
        return f"its unknown token {unk!r} may be joined across a cut"
    for merge in model.get("merges") or []:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        if right.startswith(symbol) and left[-1:] not in ends:
            return f"its merge {left!r} + {right!r} joins across {c!r}"
    return None


def _prepend_replace(normalizer: dict | None) -> str | None:
    """r where NORMALIZER is exactly Prepend(r) then Replace(" ", r)."""
    if normalizer is None or normalizer.get("type") != "Sequence":
        return None
    parts = normalizer.get("normalizers") or []
    if len(parts) != 2 or parts[0].get("type") != "Prepend" or parts[1].get("type") != "Replace":
        return None
    r = parts[0].get("prepend")
    if parts[1].get("pattern") != {"String": " "} or parts[1].get("content") != r or not r or len(r) != 1:
        return None
    return r


def _check_post_processor(post: dict | None) -> None:
    if post is None:
        return
    kind = post.get("type")
    if kind == "Sequence":
        for part in post.get("processors") or []:
            _check_post_processor(part)
    elif kind in ("ByteLevel", "RobertaProcessing"):
        if post.get("trim_offsets", True) and post.get("add_prefix_space", True):
            raise _Nowhere(f"its {kind} post-processor trims the first token's offsets apart")
    elif kind not in ("TemplateProcessing", "BertProcessing"):
        raise _Nowhere(f"its post-processor is {kind}")


def _unwrap(pre: dict | None) -> dict | None:
    """A Sequence of one pre-tokenizer is that one."""
    if pre is not None and pre.get("type") == "Sequence" and len(pre.get("pretokenizers") or []) == 1:
        return pre["pretokenizers"][0]
    return pre


def _describe(part: dict | None) -> str:
    if part is None:
        return "none"
    if part.get("type") == "Sequence":
        inner = part.get("pretokenizers") or part.get("normalizers") or []
        return "Sequence[" + ", ".join(_describe(p) for p in inner) + "]"
    return str(part.get("type"))
