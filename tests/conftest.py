"""Shared fixtures: a small BERT-Chinese-layout vocabulary made here, never downloaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Any Ray a test starts stays on 127.0.0.1 and sends no usage reports (stack-notes.md).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REFERENCE = Path(__file__).parent / "reference"
sys.path.insert(0, str(REFERENCE))
# Ray's workers do not get the driver's sys.path, only its environment: test helpers that travel
# to actors (tests/ledger.py) must be importable there too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(Path(__file__).parent), str(REFERENCE), *filter(None, [os.environ.get("PYTHONPATH")])]
)

# GPT2-Chinese's special ids: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103.
_LATIN_WORDS = ("the", "of", "and", "wiki", "china", "beijing", "nba", "ray", "npu", "token", "model")
_PIECES = ("##ς", "##σ", "##α", "##s", "##ing", "##ed", "##er", "##a", "##e", "##i", "##o", "##n", "##t", "##ab", "##c")


def small_vocab_tokens() -> list[str]:
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(1, 100)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += ["<S>", "<T>"]
    tokens += [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    tokens += [*list("σςαβγδεωàéßıı́"), "０", "１", "①", "²", "½", "！", "，", "。", "、", "；", "：", "“", "”", "《",
               "》"]
    tokens += [chr(c) for c in range(0x4E00, 0x4E00 + 2500)]  # CJK, then unknown beyond
    tokens += [chr(c) for c in range(0x3400, 0x3400 + 50)] + ["\uf900", "\u8c48"]
    tokens += list(_LATIN_WORDS) + list(_PIECES) + ["😀"]
    tokens += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    seen, unique = set(), []
    for t in tokens:
        if t not in seen:
            seen.add(t)
            unique.append(t)
    return unique


def write_vocab(path: Path, tokens: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return path


def pytest_collection_modifyitems(config, items):
    """Hardware tests run only when asked for (`-m hardware`) and skip themselves without an NPU."""
    if "hardware" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="hardware test: run with -m hardware on an Ascend NPU host")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def tables_cache(tmp_path_factory):
    """The tokenizer's code point tables are built once for the session, in a folder of its own."""
    folder = tmp_path_factory.mktemp("npueval-cache")
    old = os.environ.get("NPUEVAL_CACHE_DIR")
    os.environ["NPUEVAL_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        del os.environ["NPUEVAL_CACHE_DIR"]
    else:
        os.environ["NPUEVAL_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def vocab_path(tmp_path_factory) -> Path:
    return write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt", small_vocab_tokens())


@pytest.fixture(scope="session")
def seed_data(tmp_path_factory, vocab_path) -> Path:
    """About 300 seed-mode windows of 512 tokens, in shards of 50 (blocks cross shard boundaries)."""
    from run_data import prepare_data

    return prepare_data(tmp_path_factory.mktemp("seed"), vocab_path, 600_000)


def run_on_a_terminal(argv: list[str], timeout: float = 300):
    """Run argv with stderr on a pseudo-terminal of 120 columns (a progress bar needs a width);
    (the completed process, everything the terminal showed)."""
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=follower, timeout=timeout)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the other end is closed and drained
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return done, shown
