"""A lock file held by another process, as a second npueval writing the same folder holds it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HOLD = ("import sys, time; from pathlib import Path; from npueval.core.files import locked; "
        "lock = locked(Path(sys.argv[1]), wait=False, remove=True); lock.__enter__(); print('held', flush=True); "
        "time.sleep(60)")


@contextmanager
def held_elsewhere(lock: Path) -> Iterator[subprocess.Popen]:
    """`lock` taken by a process of its own (npueval's `locked`), until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
