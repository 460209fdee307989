"""Where a run's numbers came from: versions and hosts, for results.json."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .results_file import Provenance


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cann_version() -> str | None:
    """The CANN toolkit's version from its install info (docs/npu-hosts.md), None without CANN."""
    home = os.environ.get("ASCEND_TOOLKIT_HOME") or os.environ.get("ASCEND_HOME_PATH")
    if not home:
        return None
    for info in sorted(Path(home).glob("*-linux/ascend_toolkit_install.info")):
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("version="):
                return line.split("=", 1)[1].strip()
    return None


def provenance(command: tuple[str, ...], hosts: list[str]) -> Provenance:
    return Provenance(npueval=package_version("npueval"), command=tuple(command), python=platform.python_version(),
                      ray=package_version("ray"), onnxruntime=package_version("onnxruntime"),
                      ais_bench=package_version("ais_bench"), cann=cann_version(), hosts=tuple(sorted(set(hosts))))
