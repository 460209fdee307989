"""`npueval build` of a model over protobuf's 2 GiB limit: a Llama-family checkpoint of random
weights (default 664M parameters, 2.66 GB in float32), built to the verified model.onnx without
CANN (the build stops at atc.sh). Reports the wall time, the peak memory of the build process, the
most its --out folder held on disk while it built (sampled every 0.2 s) and at the end, and the
files it wrote; with `--before REV` the same build with the code of REV, side by side.

    python benchmarks/bench_build_large.py [--before REV] [--keep]

Needs about 6 times the model's size on disk (the checkpoint and up to four stages of the --before
build) and 4.5 times it in memory (2.5 without --before).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import install_before


def make_checkpoint(folder: Path, hidden: int, layers: int, intermediate: int, vocab: int) -> int:
    """A Llama checkpoint with a word-level tokenizer.json of `vocab` tokens; returns its parameters."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True)
    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=hidden // 128, num_key_value_heads=hidden // 256,
                         max_position_embeddings=4096, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    (folder / "config.json").write_text(json.dumps({**config.to_dict(), "architectures": ["LlamaForCausalLM"]}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    return sum(p.numel() for p in model.parameters())


def disk_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(FileNotFoundError):  # removed while we looked
            total += path.lstat().st_blocks * 512
    return total


def build_once(ckpt: Path, out: Path, pythonpath: str | None, batch: int, seq_len: int) -> dict:
    """`npueval build` in a child process (no CANN on its PATH): wall time, the child's peak RSS, the
    most `out` held on disk and what it holds at the end, its exit status and last line of stderr."""
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"])}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    code = "import sys; from npueval.eval.cli import main; sys.exit(main(sys.argv[1:]))"
    peak_disk, done = [0], threading.Event()

    def watch_disk() -> None:
        while not done.wait(0.2):
            if out.is_dir():
                peak_disk[0] = max(peak_disk[0], disk_bytes(out))

    watcher = threading.Thread(target=watch_disk, daemon=True)
    watcher.start()
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen([sys.executable, "-c", code, "build", str(ckpt), "--out", str(out), "--batch-size",
                                  str(batch), "--seq-len", str(seq_len)], env=env, stdout=subprocess.DEVNULL,
                                 stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        done.set()
        watcher.join()
        stderr.seek(0)
        lines = stderr.read().decode(errors="replace").strip().splitlines() or [""]
    if child.returncode:
        print("\n".join(lines[-20:]), file=sys.stderr)
    end_disk = disk_bytes(out) if out.is_dir() else 0
    return {"rc": child.returncode, "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "last_line": lines[-1],
            "peak_disk_gb": max(peak_disk[0], end_disk) / 1e9, "end_disk_gb": end_disk / 1e9}


def summary(name: str, r: dict) -> str:
    return (f"{name}: exit {r['rc']}, {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, disk "
            f"{r['peak_disk_gb']:.2f} GB at most, {r['end_disk_gb']:.2f} GB at the end"
            f"{'' if r['rc'] == 0 else ': ' + r['last_line']}")


def npueval(*args: str) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "disabled"}
    code = "import sys; from npueval.eval.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, *args], env=env, check=True, stdout=subprocess.DEVNULL)


def run_both(work: Path, ckpt: Path, vocab: int, seq_len: int, windows: int) -> None:
    """A JSONL corpus of random words, prepared with the build's tokenizer into about `windows`
    sliding windows, run on one worker by the onnx backend (model.onnx and its weights copied
    through Ray) and the torch backend (the checkpoint where it lies)."""
    import random

    rng = random.Random(0)
    (work / "corpus").mkdir()
    words = windows * seq_len // 2
    docs = [" ".join(f"w{rng.randrange(1, vocab)}" for _ in range(200)) for _ in range(words // 200 + 1)]
    (work / "corpus" / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    npueval("prepare", str(work / "corpus"), "--tokenizer", str(work / "out"), "--out", str(work / "data"),
            "--n-ctx", str(seq_len), "-q")
    for backend, model in (("onnx", work / "out"), ("torch", ckpt)):
        start = time.perf_counter()
        npueval("run", "--model", str(model), "--data", str(work / "data"), "--out", str(work / f"run-{backend}"),
                "--backend", backend, "--devices", "1", "-q")
        wall = time.perf_counter() - start
        r = json.loads((work / f"run-{backend}" / "results.json").read_text())
        print(f"  run --backend {backend:5}: {r['windows']} windows, {r['tokens']} tokens, mean CE "
              f"{r['mean_ce']:.6f}, {wall:.1f} s in all")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--intermediate", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--before", help="also build with the code of this git revision, first")
    ap.add_argument("--checkpoint", type=Path, help="build this checkpoint folder instead of making one")
    ap.add_argument("--run-windows", type=int, default=0,
                    help="then prepare about this many windows and run them with the onnx backend (the weights "
                         "through Ray's object store) and the torch backend on the checkpoint")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="npueval-large-"))
    try:
        ckpt = args.checkpoint or work / "ckpt"
        if args.checkpoint is None:
            params = make_checkpoint(ckpt, args.hidden, args.layers, args.intermediate, args.vocab)
            size = (ckpt / "model.safetensors").stat().st_size
            print(f"checkpoint: {params / 1e6:.0f}M parameters, {size / 1e9:.2f} GB")
        if args.before:
            r = build_once(ckpt, work / "out-before", str(install_before(args.before)), args.batch_size, args.seq_len)
            print(summary(args.before, r))
            shutil.rmtree(work / "out-before", ignore_errors=True)
        r = build_once(ckpt, work / "out", None, args.batch_size, args.seq_len)
        print(summary("this tree", r))
        if r["rc"] == 0:
            manifest = json.loads((work / "out" / "manifest.json").read_text())
            for name, stage in manifest["stages"].items():
                file = work / "out" / stage["file"]
                weights = file.with_name(file.name + ".data")
                if stage.get("removed"):
                    print(f"  {name:10} {stage['file']:18} {'removed':34} rel err {stage['verify']['rel_err']:.2e}")
                    continue
                size = f"{file.stat().st_size / 1e6:.1f} MB + {weights.stat().st_size / 1e9:.2f} GB of weights" \
                    if weights.is_file() else f"{file.stat().st_size / 1e9:.2f} GB"
                print(f"  {name:10} {stage['file']:18} {size:34} rel err {stage['verify']['rel_err']:.2e}")
            print(f"  onnx_weights: {manifest['onnx_weights']}; simplify took "
                  f"{manifest['stages']['simplify']['weights_as_inputs']} weights as inputs")
            if args.run_windows:
                run_both(work, ckpt, manifest["config"]["vocab_size"], args.seq_len, args.run_windows)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
