"""lm-eval's `loglikelihood_rolling` recomputed with plain transformers, one window at a time, for
tests that check it against the real lm-eval (lm_eval_oracle.py) and need it without a subprocess.

The windows are a transcription of lm_eval/utils.py (0.4.13) get_rolling_token_windows and
make_disjoint_window with context_len=1, as lm-eval's HFLM.loglikelihood_rolling calls them:
disjoint chunks of max_len tokens (the last one shorter), each scored after the one token before
it; the first chunk's is PREFIX, the tokenizer's BOS, else its EOS. A window the model reads is
that token and its chunk less the chunk's last token, except the last window, which reads back
so as to be max_len long (context_len=1 means at least one token of context, not at most).
Independent of npueval on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def rolling_windows(tokens: Sequence[int], prefix: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) pairs, disjoint: the model reads context + continuation[:-1] and
    scores continuation. An empty document has none."""
    tokens = list(tokens)
    if not tokens:
        return []
    first = min(max_len, len(tokens))
    windows = [([prefix], tokens[:first])]  # [prefix] + tokens[:first − 1], disjoint: just the prefix
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)  # pred_len = max_len − context_len + 1 = max_len
        end = done + n
        window = tokens[end - max_len - 1:end - 1]  # end ≥ max_len + 1 here: the start is never negative
        windows.append((window[:len(window) - (n - 1)], tokens[end - n:end]))
        done = end
    return windows


def prefix_token(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def lm_eval_tokens(tokenizer, text: str) -> list[int]:
    """A document's tokens as HFLM.tok_encode makes them: tokenizer.encode(text) WITH special
    tokens (whatever the tokenizer.json's post_processor adds, such as Llama's BOS, which the
    prefix then precedes: BOS BOS text), and without them when the text already starts with the
    prefix token's spelling."""
    starts_with_prefix = text.startswith(tokenizer.decode(prefix_token(tokenizer)))
    return tokenizer.encode(text, add_special_tokens=not starts_with_prefix)


def rolling_loglikelihoods(checkpoint: Path, texts: Sequence[str], max_len: int) -> list[float]:
    """Σ log p of each text's tokens (lm_eval_tokens), float64 from the float32 logits of a
    float32 model, each window its own unpadded forward pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    prefix = prefix_token(tokenizer)
    out = []
    for text in texts:
        total = 0.0
        for context, continuation in rolling_windows(lm_eval_tokens(tokenizer, text), prefix, max_len):
            ids = (context + continuation)[:-1]
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0]
            logp = torch.log_softmax(logits.double(), dim=-1)[len(ids) - len(continuation):]
            total += logp[torch.arange(len(continuation)), torch.tensor(continuation)].sum().item()
        out.append(total)
    return out


def scored_rows(tokens: Sequence[int], prefix: int, max_len: int) -> list[tuple[list[int], int]]:
    """Each window as the ids the model sees, with the token its last logits predict (as
    _loglikelihood_tokens cuts (context + continuation)[-(max_len + 1):]), and the position of the
    first scored token among them: one row of max_len + 1 ids of a static model."""
    rows = []
    for context, continuation in rolling_windows(tokens, prefix, max_len):
        ids = (context + continuation)[-(max_len + 1):]
        rows.append((ids, len(ids) - len(continuation)))
    return rows
