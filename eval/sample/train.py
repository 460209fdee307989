"""Train the bundled sample model: a small GPT-2 of GPT2-Chinese's architecture, on CPU, seeded.

    python -m npueval.eval.sample.train --out /tmp/sample [--minutes 25]

1. The vocabulary, built from the sample's training articles (eval/sample/corpus.py) in
   BERT-Chinese layout: [PAD] 0, [unused1..99], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103,
   then every token the tokenizer emits on the training text (single characters, and "##"
   continuations inside runs of digits or letters), most frequent first.
2. The training windows, made by `npueval prepare` itself (one piece, stride 256, no length
   filter), so the model sees exactly the stream layout it is evaluated on.
3. Training (AdamW, warm-up and cosine decay, a fixed number of steps), then the
   held-out windows' perplexity (the windows bare `npueval run` evaluates) next to a unigram
   model's (add-one smoothed token frequencies of the training text), logged with the
   checkpoint's sha256.

The output folder is a checkpoint (config.json, vocab.txt, model.safetensors in fp16) that
`npueval build` takes. Needs the `build` extra (torch, transformers, safetensors).
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npueval.core.files import file_sha256
from npueval.core.vocab import load_vocab
from npueval.eval.data.prepare import PrepareConfig, prepare
from npueval.eval.data.tokenizer import BertChineseTokenizer
from npueval.eval.sample import corpus as sample_corpus

log = logging.getLogger(__name__)

SPECIALS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
FIRST_FREE_ID = 104


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_ctx: int = 512
    batch_size: int = 8
    steps: int = 600
    lr: float = 1.5e-3
    warmup: int = 60
    weight_decay: float = 0.01
    dropout: float = 0.1
    seed: int = 0
    threads: int | None = None


# ------------------------------------------------------------------------------------------
def layout_vocab(tokens_by_frequency: list[str]) -> list[str]:
    """BERT-Chinese layout: specials at GPT2-Chinese's ids, [unusedN] between, then the tokens."""
    lines = [SPECIALS.get(i, f"[unused{i}]") for i in range(FIRST_FREE_ID)]
    return lines + [t for t in tokens_by_frequency if t not in SPECIALS.values()]


def build_vocab(texts: list[str], path: Path) -> Path:
    """The vocabulary the tokenizer actually uses on TEXTS, most frequent token first.

    A candidate vocabulary holds every character (in the tokenizer's normalized form) both
    alone and as a "##" continuation; tokenizing the texts with it shows which entries occur.
    """
    chars: set[str] = set()
    for text in texts:
        for ch in unicodedata.normalize("NFD", text.lower()):
            if not ch.isspace() and unicodedata.category(ch) != "Mn":
                chars.add(ch)
    candidate = layout_vocab(sorted(chars) + ["##" + ch for ch in sorted(chars)])
    with tempfile.TemporaryDirectory() as tmp:
        candidate_path = Path(tmp) / "vocab.txt"
        candidate_path.write_text("\n".join(candidate) + "\n", encoding="utf-8")
        vocab = load_vocab(candidate_path)
        tokenizer = BertChineseTokenizer(vocab)
        counts = Counter()
        for ids in tokenizer.encode_batch(texts):
            counts.update(ids.tolist())
    id_to_token = {i: t for t, i in vocab.token_to_id.items()}
    used = sorted((i for i in counts if i >= FIRST_FREE_ID), key=lambda i: (-counts[i], id_to_token[i]))
    path.write_text("\n".join(layout_vocab([id_to_token[i] for i in used])) + "\n", encoding="utf-8")
    return path


def read_windows(data: Path) -> np.ndarray:
    """A prepared data set's windows, rows in stored order, int64."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables(pq.read_table(p) for p in sorted(data.glob("shard-*.parquet")))
    return np.stack(table.column("input_ids").to_numpy(zero_copy_only=False)).astype(np.int64)


def training_windows(articles: list[sample_corpus.Article], vocab: Path, work: Path, n_ctx: int) -> np.ndarray:
    """The training articles cut by `npueval prepare` itself: one piece, stride n_ctx/2, no length filter."""
    sample_corpus.write_wiki_zh(articles, work / "corpus")
    prepare(PrepareConfig(corpus_dir=work / "corpus", vocab=vocab, out=work / "data", workers=0, num_pieces=1,
                          min_length=0, n_ctx=n_ctx, stride=n_ctx // 2))
    return read_windows(work / "data")


# ------------------------------------------------------------------------------------------
def unigram_counts(texts: list[str], vocab) -> np.ndarray:
    """Token counts of the texts' stream as `prepare` lays it out: [MASK], the ids, [CLS] per article."""
    ids = BertChineseTokenizer(vocab).encode_batch([t.replace("\n", " [SEP] ") for t in texts])
    counts = np.bincount(np.concatenate(ids), minlength=vocab.size).astype(np.float64)
    counts[vocab.mask_id] += len(texts)
    counts[vocab.cls_id] += len(texts)
    return counts


def unigram_nll(counts: np.ndarray, windows: np.ndarray) -> float:
    """Mean NLL (nats) of the windows' targets under add-one smoothed token frequencies."""
    logp = np.log((counts + 1.0) / (counts.sum() + counts.size))
    return float(-logp[windows[:, 1:]].sum(dtype=np.float64) / windows[:, 1:].size)


def model_nll(model, windows: np.ndarray, batch_size: int = 8) -> float:
    """Mean NLL (nats) over every window's targets, summed in float64."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            ids = torch.from_numpy(windows[start : start + batch_size])
            logits = model(ids).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                    reduction="sum")
            total += float(nll.double())
            count += ids[:, 1:].numel()
    return total / count


def evaluate(checkpoint: Path) -> dict:
    """The quality bar: held-out perplexity (the default run's windows) next to a unigram model's."""
    from npueval.core.checkpoint import load_model, open_checkpoint
    from npueval.eval.sample.bundled import prepare_sample

    ckpt = open_checkpoint(checkpoint)
    all_articles = sample_corpus.articles()
    with tempfile.TemporaryDirectory() as tmp:
        sample = prepare_sample(cache=Path(tmp), vocab=ckpt.vocab.path)
        windows = read_windows(sample.data)
    held_out = model_nll(load_model(ckpt), windows)
    unigram = unigram_nll(unigram_counts([a.text for a in sample_corpus.training(all_articles)], ckpt.vocab), windows)
    figures = {
        "held_out_windows": len(windows),
        "held_out_ppl": math.exp(held_out),
        "unigram_ppl": math.exp(unigram),
        "sha256": file_sha256(checkpoint / "model.safetensors"),
    }
    log.info(
        "held-out perplexity %.2f, unigram %.2f (ratio %.3f) on %d windows; model.safetensors sha256 %s",
        figures["held_out_ppl"], figures["unigram_ppl"], figures["held_out_ppl"] / figures["unigram_ppl"],
        figures["held_out_windows"], figures["sha256"],
    )
    return figures


def train(config: TrainConfig) -> dict:
    import torch
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)

    train_articles = sample_corpus.training(sample_corpus.articles())
    vocab_path = build_vocab([a.text for a in train_articles], out / "vocab.txt")
    vocab = load_vocab(vocab_path)
    log.info("vocab: %d tokens from %d training articles", vocab.size, len(train_articles))
    with tempfile.TemporaryDirectory() as tmp:
        train_windows = training_windows(train_articles, vocab_path, Path(tmp), config.n_ctx)
    log.info("%d training windows", len(train_windows))

    gpt2 = GPT2Config(
        vocab_size=vocab.size, n_positions=config.n_ctx, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        bos_token_id=vocab.cls_id, eos_token_id=vocab.sep_id,
    )
    model = GPT2LMHeadModel(gpt2)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay,
                                                                  "weight_decay": 0.0}], lr=config.lr
    )

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))

    order = np.empty(0, dtype=np.int64)
    started = time.perf_counter()
    model.train()
    for step in range(config.steps):
        if len(order) < config.batch_size:
            order = np.concatenate([order, rng.permutation(len(train_windows))])
        rows, order = order[: config.batch_size], order[config.batch_size :]
        ids = torch.from_numpy(train_windows[rows])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == config.steps - 1:
            log.info("step %d/%d loss %.3f lr %.2e %.0f s", step, config.steps, loss.item(), lr_at(step),
                     time.perf_counter() - started)

    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items() if not k.endswith(".attn.bias")}
    state.pop("lm_head.weight", None)  # tied to transformer.wte.weight
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(out)
    log.info("trained in %.0f s", time.perf_counter() - started)
    return evaluate(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint folder to write")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="only the quality figures of the checkpoint in --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.evaluate_only:
        evaluate(args.out)
        return
    train(TrainConfig(out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      threads=args.threads))


if __name__ == "__main__":
    main()
