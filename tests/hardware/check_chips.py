"""Check every chip of this NPU host end to end, and write a report to attach to a bug report.

On an Ascend host, with CANN's set_env.sh sourced, ais_bench installed and npueval installed with
its test extra (`pip install -e ".[test]"`), from the repository root:

    python tests/hardware/check_chips.py --out chip-check

It runs, each step as a user would type it, its output kept in the report:

1. `npueval doctor`;
2. a tiny GPT-2 (2 layers, seeded random weights, made here, nothing downloaded), and
   `npueval build` with this host's atc;
3. a small generated corpus in the wiki_zh layout, and `npueval prepare`;
4. `npueval run --backend om` on every chip Ray sees, with `--check-against` the build's
   model.onnx: each chip's first batches run on the host too, per-token NLL compared;
5. a line per chip: windows, device FPS, largest errors against onnxruntime, and a verdict.

Exit 0 when every chip ran and agreed with onnxruntime within TOLERANCE; 1 otherwise; the report
(OUT/report.txt) says which step failed and keeps every command's output.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "reference")]

#: Largest per-token NLL error against the float32 graph on the host: fp16 matmuls, the loss kept in fp32.
TOLERANCE = 5e-2
B, L = 4, 64


class Report:
    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)
        self.path.write_text("\n".join(self.lines) + "\n")

    def step(self, title: str, argv: list[str]) -> subprocess.CompletedProcess:
        self.say(f"\n== {title}\n$ {shlex.join(argv)}")
        done = subprocess.run(argv, capture_output=True, text=True)
        for stream in (done.stdout, done.stderr):
            if stream.strip():
                self.say(stream.rstrip())
        self.say(f"(exit {done.returncode})")
        return done


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="chip-check", help="folder for the model, the data, the run and report.txt")
    args = p.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out / "report.txt")
    npueval = [sys.executable, "-m", "npueval.eval"]

    report.step("npueval doctor", [*npueval, "doctor"])

    from checkpoints import make_checkpoint
    from textgen import generate_wiki_corpus
    from vocabs import small_vocab_tokens

    checkpoint = make_checkpoint(out / "checkpoint")
    built = report.step("npueval build (this host's atc)",
                        [*npueval, "build", str(checkpoint), "--out", str(out / "build"), "--batch-size", str(B),
                         "--seq-len", str(L)])
    if built.returncode != 0 or not (out / "build" / "model.om").is_file():
        report.say("\nFAILED: the build made no OM (see atc.log in the build folder: "
                   f"{out / 'build' / 'atc.log'})")
        return 1
    generate_wiki_corpus(out / "wiki", small_vocab_tokens(), 60_000, articles_per_file=60)
    prepared = report.step("npueval prepare", [*npueval, "prepare", str(out / "wiki"), "--vocab",
                                               str(checkpoint / "vocab.txt"), "--out", str(out / "data"),
                                               "--mode", "sliding", "--n-ctx", str(L), "--files", "all", "--force"])
    if prepared.returncode != 0:
        report.say("\nFAILED: prepare")
        return 1
    ran = report.step("npueval run on every chip, checked against onnxruntime",
                      [*npueval, "run", "--backend", "om", "--model", str(out / "build"), "--data", str(out / "data"),
                       "--out", str(out / "run"), "--force", "--block-windows", "16", "--wait-for-devices",
                       "--check-against", str(out / "build" / "model.onnx"), "--check-batches", "2"])
    if ran.returncode != 0:
        report.say("\nFAILED: the run (its one-line error is above)")
        return 1
    results = json.loads((out / "run" / "results.json").read_text())
    report.say(f"\n== per chip (ais_bench API: {results['ais_bench_api']}; mean CE {results['mean_ce']:.6f})")
    failed = []
    for d in results["per_device"]:
        check = d["check"] or {}
        ok = d["windows"] > 0 and check.get("batches", 0) > 0 and check["max_abs_err"] < TOLERANCE
        failed += [] if ok else [d["device"]]
        report.say(f"{d['device']} on node {d['node'][:8]}: {d['windows']} windows, device FPS {d['fps'] or 0:.1f}, "
                   f"max abs err {check.get('max_abs_err', float('nan')):.2e}, max rel err "
                   f"{check.get('max_rel_err', float('nan')):.2e}: {'ok' if ok else 'FAILED'}")
    report.say(f"\n{'FAILED on ' + ', '.join(failed) if failed else 'every chip ok'} "
               f"({len(results['per_device'])} chip(s)); report: {report.path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
