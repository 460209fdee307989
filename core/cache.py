"""npueval's cache folder: the tokenizer's code point tables, the bundled sample's prepared data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$NPUEVAL_CACHE_DIR, else $XDG_CACHE_HOME/npueval, else ~/.cache/npueval."""
    if os.environ.get("NPUEVAL_CACHE_DIR"):
        return Path(os.environ["NPUEVAL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "npueval"
