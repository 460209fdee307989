"""The real lm-evaluation-harness as an oracle: its `loglikelihood_rolling` protocol on a local
checkpoint and a local JSONL corpus, for the tests of `prepare --mode rolling`.

It runs the `lm_eval` CLI (the test extra pins lm-eval[hf]) in a subprocess, offline, through a
task YAML written here: the corpus's `text` field is the target as it stands (a feature name,
so no Jinja template touches it) and the context is empty, as in lm-eval's wikitext task. Every
cache it writes lies under WORK, none in ~/.cache. Independent of npueval on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TASK = "npueval_rolling"

_TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {corpus}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


def write_task(folder: Path, corpus: Path, task: str = TASK) -> Path:
    """TASK's YAML in FOLDER (lm_eval --include_path FOLDER --tasks TASK) over the JSONL CORPUS."""
    path = folder / f"{task}.yaml"
    # json.dumps: a YAML-safe quoted path whatever characters it holds.
    path.write_text(_TASK_YAML.format(task=task, corpus=json.dumps(str(corpus.resolve()))))
    return path


@dataclass(frozen=True)
class LmEvalDoc:
    loglikelihood: float  # Σ log p over the document's tokens (natural log, ≤ 0)
    words: int  # len(re.split(r"\s+", text))
    bytes: int  # len(text.encode("utf-8"))


@dataclass(frozen=True)
class LmEvalResult:
    word_perplexity: float
    byte_perplexity: float
    bits_per_byte: float
    docs: tuple[LmEvalDoc, ...]  # in the corpus's order


def run_lm_eval(checkpoint: Path, corpus: Path, max_length: int, work: Path, batch_size: int = 4,
                timeout: float = 900) -> LmEvalResult:
    """lm-eval's rolling loglikelihood of each document of CORPUS (JSONL, {"text": ...} a line)
    under CHECKPOINT (a Hugging Face folder) in float32 on CPU, windows of MAX_LENGTH tokens."""
    work.mkdir(parents=True, exist_ok=True)
    tasks, out = work / "tasks", work / "out"
    tasks.mkdir(exist_ok=True)
    write_task(tasks, corpus)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(work / "hf"), "HF_DATASETS_CACHE": str(work / "hf" / "datasets"),
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "lm_eval", "--model", "hf",
               "--model_args", f"pretrained={checkpoint.resolve()},dtype=float32,max_length={max_length}",
               "--tasks", TASK, "--include_path", str(tasks), "--device", "cpu", "--batch_size", str(batch_size),
               "--output_path", str(out), "--log_samples"]
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"lm_eval exited {done.returncode}:\n{done.stderr[-4000:]}")
    # lm-eval writes OUT/<model name>/results_<time>.json and samples_<task>_<time>.jsonl.
    (results_file,) = out.rglob("results_*.json")
    (samples_file,) = out.rglob(f"samples_{TASK}_*.jsonl")
    metrics = json.loads(results_file.read_text(encoding="utf-8"))["results"][TASK]
    samples = sorted(_json_lines(samples_file), key=lambda s: s["doc_id"])
    texts = [doc["text"] for doc in _json_lines(corpus)]
    assert [s["doc"]["text"] for s in samples] == texts, "lm-eval's documents are not the corpus's, in order"
    docs = []
    for s in samples:
        ll = float(s["resps"][0][0])  # logged as a string, repr of the float
        assert s["word_perplexity"][0] == s["byte_perplexity"][0] == ll
        docs.append(LmEvalDoc(ll, s["word_perplexity"][1], s["byte_perplexity"][1]))
    return LmEvalResult(metrics["word_perplexity,none"], metrics["byte_perplexity,none"],
                        metrics["bits_per_byte,none"], tuple(docs))


def _json_lines(path: Path) -> list:
    # Split at b"\n" only: str.splitlines() would also cut at U+2028, U+0085 and the like, which
    # JSON allows unescaped inside a string.
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]
