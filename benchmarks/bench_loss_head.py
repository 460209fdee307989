"""Benchmark: the port's logits graph + host cross-entropy against npueval's loss-head graph.

For a GPT-2 of a given shape (random weights, seeded) it builds, with npueval's own stages, the
logits graph (`--output logits`) and the loss-head graph (`--output nll`) at B = 4 and 8,
L = 512, and on onnxruntime CPU measures per batch: the graph's wall time, the bytes a device
would hand back (fp16 logits, as the port's OM returns them, against float32 NLL), and the
host cross-entropy the logits path needs afterwards (numpy, float32 upcast of the fp16 logits,
stable log-sum-exp). It also sets that host cost next to a 310P3's device time for the same
batch (the port's table: 189 samples/s at B = 8, i.e. 42.3 ms per batch of 8).

Run from the repository root, in the project's virtual environment (the `build` extra):

    python benchmarks/bench_loss_head.py --shape tiny
    python benchmarks/bench_loss_head.py --shape full --repeat 3     # GPT2-Chinese: 12 × 768, vocab 21128
    python benchmarks/bench_loss_head.py --shape vocab-150k --batches 8   # Qwen2's vocabulary, ~10 GB of RAM
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = {
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 21128},
    "full": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 21128},
    # Qwen2's vocabulary (151,936) on the tiny body: the head's cost grows with the vocabulary alone.
    "vocab-150k": {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 151936},
}
SEQ_LEN = 512
PORT_SAMPLES_PER_S_B8 = 189.0  # the port's readme, 310P3, batch 8


def make_model(shape: dict):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_positions=SEQ_LEN, bos_token_id=101, eos_token_id=102, attn_implementation="eager", **shape)
    return GPT2LMHeadModel(config).eval()


def build_graphs(model, work: Path, batch: int) -> dict[str, Path]:
    """The logits and loss-head graphs at (batch, SEQ_LEN), through npueval's stages."""
    import onnx

    from npueval.build.export import export_onnx
    from npueval.build.loss_head import add_loss_head
    from npueval.build.passes import run_passes
    from npueval.build.simplify import simplify

    exported = work / "export.onnx"
    if not exported.is_file():
        export_onnx(model, exported, SEQ_LEN)
    simplified, npu = work / f"simplified-b{batch}.onnx", work / f"logits-b{batch}.onnx"
    simplify(exported, simplified, batch, SEQ_LEN)
    edited, _ = run_passes(onnx.load(str(simplified)))
    onnx.save(edited, str(npu))
    add_loss_head(npu, work / f"nll-b{batch}.onnx")
    return {"logits": npu, "nll": work / f"nll-b{batch}.onnx"}


def host_cross_entropy(logits_fp16: np.ndarray, targets: np.ndarray) -> float:
    """Mean NLL over (B, L-1) targets, the port's way but in numpy: upcast, log-sum-exp, pick."""
    z = logits_fp16[:, :-1].astype(np.float32)
    z -= z.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1))
    picked = np.take_along_axis(z, targets[:, 1:, None], axis=-1)[..., 0]
    return float((log_norm - picked).mean())


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def measure(graphs: dict[str, Path], batch: int, vocab: int, repeat: int) -> dict:
    import onnxruntime as ort

    from npueval.core.model_io import targets_for

    ids = np.random.default_rng(1).integers(0, vocab, (batch, SEQ_LEN), dtype=np.int64)
    logits_session = ort.InferenceSession(str(graphs["logits"]), providers=["CPUExecutionProvider"])
    nll_session = ort.InferenceSession(str(graphs["nll"]), providers=["CPUExecutionProvider"])
    logits_s, logits = timed(lambda: logits_session.run(None, {"input_ids": ids})[0], repeat)
    fp16 = logits.astype(np.float16)  # what the port's OM hands back
    ce_s, ce = timed(lambda: host_cross_entropy(fp16, ids), repeat)
    targets = targets_for(ids)
    nll_s, nll = timed(lambda: nll_session.run(None, {"input_ids": ids, "targets": targets})[0], repeat)
    return {
        "batch": batch,
        "logits_graph_s": logits_s,
        "host_ce_s": ce_s,
        "logits_path_s": logits_s + ce_s,
        "nll_graph_s": nll_s,
        "logits_bytes_fp16": int(fp16.nbytes),
        "nll_bytes": int(nll.nbytes),
        "bytes_removed": 1 - nll.nbytes / fp16.nbytes,
        "mean_nll_host": ce,
        "mean_nll_graph": float(nll[:, :-1].mean()),
        "device_ms_310p3": 1000 * batch / PORT_SAMPLES_PER_S_B8,
    }


def table(shape: str, rows: list[dict]) -> str:
    lines = [
        "| shape | B | logits graph s | host CE s | logits path s | loss-head graph s "
        "| bytes back (fp16 logits → nll) | removed | host CE vs 310P3 device time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {shape} | {r['batch']} | {r['logits_graph_s']:.3f} | {r['host_ce_s']:.3f} | {r['logits_path_s']:.3f} | "
            f"{r['nll_graph_s']:.3f} | {r['logits_bytes_fp16']:,} → {r['nll_bytes']:,} | "
            f"{100 * r['bytes_removed']:.3f}% | "
            f"{1000 * r['host_ce_s']:.0f} ms vs {r['device_ms_310p3']:.1f} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--batches", default="4,8", help="comma-separated static batch sizes (default 4,8)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    p.add_argument("--json", type=Path, help="write the raw numbers here")
    args = p.parse_args(argv)

    shape = SHAPES[args.shape]
    model = make_model(shape)
    rows = []
    with tempfile.TemporaryDirectory(prefix="npueval-bench-") as tmp:
        for batch in (int(b) for b in args.batches.split(",")):
            start = time.perf_counter()
            graphs = build_graphs(model, Path(tmp), batch)
            print(f"built B={batch} graphs in {time.perf_counter() - start:.1f} s", file=sys.stderr)
            row = measure(graphs, batch, shape["vocab_size"], args.repeat)
            assert abs(row["mean_nll_host"] - row["mean_nll_graph"]) < 1e-2, row  # same loss, fp16 aside
            rows.append(row)
    print(table(args.shape, rows))
    print(f"\n{time.strftime('%Y-%m-%d %H:%M:%S %z')}; {args.shape}: {shape}; L={SEQ_LEN}; median of {args.repeat}; "
          "onnxruntime CPU; host CE in numpy on the fp16 logits upcast to float32.")
    if args.json:
        args.json.write_text(json.dumps({"shape": args.shape, "config": shape, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
