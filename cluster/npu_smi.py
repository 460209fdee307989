"""`npu-smi info`: the chip names of this host (what ATC's --soc_version needs).

The full device table (logic ids, health, memory) is `npueval devices`' job; this reads the
card rows only: `| <NPU id>  <Name> | <Health> | …`, in every layout of ascend.md §2.1.
"""

from __future__ import annotations

import shutil
import subprocess

from npueval.eval.errors import UserError

HEALTH = {"OK", "Warning", "Alarm", "Critical", "UNKNOWN"}


def chip_names(text: str) -> list[str]:
    """The Name of every chip's card row, in order (310P3 Duo: one row per chip)."""
    names = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[1] not in HEALTH:
            continue
        first = cells[0].split()
        if len(first) == 2 and first[0].isdigit():
            names.append(first[1])
    return names


def soc_version_from_npu_smi() -> str:
    """`Ascend` + the chip name npu-smi shows (310P3 → Ascend310P3)."""
    exe = shutil.which("npu-smi")
    if exe is None:
        raise UserError("--soc auto: npu-smi is not on PATH, so the chip is unknown; pass --soc, e.g. --soc Ascend310P3")
    result = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=60)
    names = sorted(set(chip_names(result.stdout)))
    if result.returncode != 0 or not names:
        first = (result.stdout + result.stderr).strip().splitlines()[:2]
        raise UserError(f"--soc auto: could not read a chip name from `npu-smi info` ({' / '.join(first)}); pass --soc")
    if len(names) > 1:
        raise UserError(f"--soc auto: this host has several chip kinds ({', '.join(names)}); pass --soc for the one to build for")
    return f"Ascend{names[0]}"
