"""A generated corpus of wiki_zh_2019's layout and size, for scale runs (RELIABILITY.md, "Scale").

wiki_zh_2019 (the port's data set) is 1,043,224 articles in about 1.6 GB of JSON lines, in
folders AA, AB, … of up to 100 files wiki_00 … wiki_99. This writes the same layout at
`--scale` times that size: articles of Chinese-Wikipedia-like text (tests/reference/textgen.py:
CJK characters of the vocabulary with punctuation, numbers and Latin words), 800 per file, each
file seeded by (--seed, its index), so the corpus is the same whatever --workers is. The text
means nothing, but `npueval prepare` reads and tokenizes it as it would the real corpus. At
--scale 0.01 (measured): 10,432 articles, 17.2 MB, 5.68 M tokens in the stream, 7,376 seed-mode
windows, 6.8 MB of shards: so at scale 1 about 1.7 GB, 570 M tokens and 0.74 M windows, against
wiki_zh_2019's 1.6 GB, about 500 M tokens and 0.65 M windows.

The disk is checked first: the corpus needs about 1.7 GB × scale, and `npueval prepare --files
all` then writes about 0.7 GB × scale of seed-mode shards (sliding mode, stride 256: about 3×
that, 2 GB). Not enough free space is a one-line error before anything is written. Generating
takes about 5 minutes per 1× on two cores.

    python benchmarks/gen_wiki_zh.py benchmarks/out/wiki-1x --scale 1
    python benchmarks/gen_wiki_zh.py benchmarks/out/wiki-0.1x --scale 0.1 --workers 2
    python benchmarks/gen_wiki_zh.py benchmarks/out/wiki-port --first-files-only   # the port's eval set

A folder already generated with the same arguments (its .complete file) is kept as it is.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "reference"))

import textgen  # noqa: E402

WIKI_ZH_ARTICLES = 1_043_224
ARTICLES_PER_FILE = 800
FILES_PER_FOLDER = 100
# Measured at --scale 0.01 (the module docstring): 1,645 bytes per article; seed-mode shards take
# 0.40 bytes per corpus byte, and sliding mode at stride 256 keeps 3 windows for seed's 1.
BYTES_PER_ARTICLE = 1645
SEED_SHARD_RATIO, SLIDING_SHARD_RATIO = 0.40, 3 * 0.40
#: Where --vocab is not given: a vocabulary of BERT-Chinese's shape and size (textgen), written once.
DEFAULT_VOCAB = REPO / "benchmarks" / "out" / "bert-chinese-shaped-vocab.txt"


def default_vocab() -> Path:
    """DEFAULT_VOCAB, written if it is not there yet."""
    if not DEFAULT_VOCAB.is_file():
        DEFAULT_VOCAB.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_VOCAB.write_text("".join(t + "\n" for t in textgen.bert_chinese_shaped_vocab()), encoding="utf-8")
    return DEFAULT_VOCAB


def file_path(root: Path, index: int) -> Path:
    return root / textgen.folder_name(index // FILES_PER_FOLDER) / f"wiki_{index % FILES_PER_FOLDER:02d}"


def _write_file(task: tuple[Path, list[str], int, int, int]) -> int:
    root, vocab_tokens, seed, index, articles = task
    gen = textgen.WikiTextGen(vocab_tokens, seed=seed * 1_000_003 + index)
    return textgen.write_jsonl(file_path(root, index), [gen.article() for _ in range(articles)]).stat().st_size


def plan(scale: float) -> list[int]:
    """Articles per file: 800 each, the last one the remainder."""
    total = max(1, round(WIKI_ZH_ARTICLES * scale))
    full, rest = divmod(total, ARTICLES_PER_FILE)
    return [ARTICLES_PER_FILE] * full + ([rest] if rest else [])


def disk_needed(scale: float) -> dict[str, float]:
    corpus = WIKI_ZH_ARTICLES * scale * BYTES_PER_ARTICLE
    return {"corpus": corpus, "seed shards": corpus * SEED_SHARD_RATIO, "sliding shards": corpus * SLIDING_SHARD_RATIO}


def check_disk(out: Path, scale: float) -> None:
    need = disk_needed(scale)
    probe = out if out.exists() else next(p for p in out.parents if p.exists())
    free = shutil.disk_usage(probe).free
    wanted = need["corpus"] + need["seed shards"]
    summary = ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in need.items())
    print(f"disk: {free / 1e9:.1f} GB free at {probe}; needs {summary}", file=sys.stderr)
    if free < wanted * 1.1:
        raise SystemExit(f"gen_wiki_zh: {probe} has {free / 1e9:.1f} GB free; the corpus and its seed-mode shards "
                         f"need about {wanted / 1e9:.1f} GB: choose a smaller --scale or another folder")


def generate(out: Path, vocab: Path, scale: float, seed: int, workers: int, first_files_only: bool = False) -> dict:
    """The corpus at `scale`; `first_files_only`: only each folder's first file (the same text as in
    the whole corpus), which is what the port evaluates (`npueval prepare --files first`)."""
    marker = out / ".complete"
    wanted = {"scale": scale, "seed": seed, "vocab": str(vocab), "articles_per_file": ARTICLES_PER_FILE,
              "first_files_only": first_files_only}
    if marker.is_file() and {k: v for k, v in json.loads(marker.read_text()).items() if k in wanted} == wanted:
        return json.loads(marker.read_text())
    counts = plan(scale)
    chosen = [i for i in range(len(counts)) if not first_files_only or i % FILES_PER_FOLDER == 0]
    check_disk(out, scale * len(chosen) / len(counts))
    shutil.rmtree(out, ignore_errors=True)
    vocab_tokens = vocab.read_text(encoding="utf-8").splitlines()
    tasks = [(out, vocab_tokens, seed, i, counts[i]) for i in chosen]
    counts = [counts[i] for i in chosen]
    t0 = time.perf_counter()
    written = 0
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for k, size in enumerate(pool.imap(_write_file, tasks, chunksize=4), 1):
            written += size
            if k % 100 == 0 or k == len(tasks):
                print(f"  {k}/{len(tasks)} files, {written / 1e6:.0f} MB", file=sys.stderr, flush=True)
    info = {**wanted, "articles": sum(counts), "files": len(counts), "bytes": written,
            "generate_s": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(info) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the corpus folder to write (AA/wiki_00, …)")
    p.add_argument("--scale", type=float, default=1.0, help="times wiki_zh_2019's 1,043,224 articles (default 1)")
    p.add_argument("--vocab", type=Path, help="vocab.txt whose characters the text uses (default: one of "
                   "BERT-Chinese's shape and size, made up; GPT2-Chinese's own vocab.txt where you have it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--first-files-only", action="store_true",
                   help="only each folder's first file: the port's eval set (`npueval prepare --files first`)")
    args = p.parse_args(argv)
    if args.scale <= 0:
        raise SystemExit(f"gen_wiki_zh: --scale must be more than 0, not {args.scale}")
    args.vocab = args.vocab or default_vocab()
    if not args.vocab.is_file():
        raise SystemExit(f"gen_wiki_zh: --vocab {args.vocab}: no such file; give GPT2-Chinese's vocab.txt")
    info = generate(args.out, args.vocab, args.scale, args.seed, args.workers, args.first_files_only)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
