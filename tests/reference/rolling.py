"""lm-evaluation-harness's rolling windows, transcribed from lm_eval/utils.py (0.4.13):
get_rolling_token_windows and make_disjoint_window, and how models/huggingface.py's
_loglikelihood_tokens turns a (context, continuation) pair into the ids it feeds."""

from __future__ import annotations


def rolling_windows(tokens: list[int], prefix: int, max_length: int, context_len: int = 1):
    """(context, continuation) pairs of one document, as loglikelihood_rolling makes them."""
    if not tokens:
        return []
    pred_len = max_length - context_len + 1
    first = min(max_length, len(tokens))
    pairs = [([prefix, *tokens[:first - 1]], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, pred_len)
        end = predicted + n
        pairs.append((tokens[end - max_length - 1:end - 1], tokens[end - n:end]))
        predicted += n
    return [(a[:len(a) - (len(b) - 1)], b) for a, b in pairs]  # make_disjoint_window


def scored_rows(tokens: list[int], prefix: int, max_length: int) -> list[tuple[list[int], int]]:
    """Each window as the ids of context and continuation the model sees (the last one is only
    predicted), and the position of the first scored token among them."""
    rows = []
    for context, continuation in rolling_windows(tokens, prefix, max_length):
        ids = (context + continuation)[-(max_length + 1):]
        rows.append((ids, len(ids) - len(continuation)))
    return rows
