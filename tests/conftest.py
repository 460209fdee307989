"""Shared fixtures: a small BERT-Chinese-layout vocabulary made here, never downloaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from vocabs import small_vocab_tokens, write_vocab

# Any Ray a test starts stays on 127.0.0.1 and sends no usage reports (Ray reads these switches when it starts).
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
