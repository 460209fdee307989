"""Hugging Face's "Perplexity of fixed-length models" guide (transformers docs, perplexity.md),
its strided loop transcribed as it stands, for the tests of `prepare --mode stride`.

The guide's own figure carries its approximation: each window's mean loss is weighted by
num_valid_tokens − 1, though a window after the first scores all trg_len of its targets
(labels shift inside the model, and only the first window loses its first label to that).
So the same forward passes also give the exact sum: Σ −log p in float64 (log_softmax of the
float32 logits) over the tokens actually scored, and their count. Independent of npueval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GuideResult:
    ppl: float  # the guide's exp(nll_sum / n_tokens), as it computes it (float32 tensors)
    guide_nll_sum: float
    guide_n_tokens: int
    nll_sum: float  # exact: Σ −log p over the scored tokens, float64
    n_tokens: int  # exact: how many tokens were scored
    seq_len: int  # tokens of the joined text

    @property
    def nats_per_token(self) -> float:
        return self.nll_sum / self.n_tokens

    @property
    def exact_ppl(self) -> float:
        return math.exp(self.nats_per_token)


def guide_perplexity(checkpoint: Path, texts: Sequence[str], max_length: int, stride: int) -> GuideResult:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    encodings = tokenizer("\n\n".join(texts), return_tensors="pt")

    seq_len = encodings.input_ids.size(1)
    nll_sum = 0.0
    n_tokens = 0
    exact_sum, exact_n = 0.0, 0
    prev_end_loc = 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = encodings.input_ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100

        with torch.no_grad():
            outputs = model(input_ids, labels=target_ids)
            neg_log_likelihood = outputs.loss

        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size  # the guide: "subtract batch_size due to internal label shift"
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens

        # Exact: label j is predicted by logits j − 1, so label 0 is never scored.
        logp = torch.log_softmax(outputs.logits[0].double(), dim=-1)
        scored = (target_ids[0, 1:] != -100).nonzero().flatten() + 1
        exact_sum -= logp[scored - 1, input_ids[0, scored]].sum().item()
        exact_n += len(scored)

        prev_end_loc = end_loc
        if end_loc == seq_len:
            break

    avg_nll = nll_sum / n_tokens
    ppl = torch.exp(avg_nll)
    return GuideResult(float(ppl), float(nll_sum), int(n_tokens), exact_sum, exact_n, seq_len)
