"""Stage 6: ATC, the ONNX → OM compiler of CANN (docs/npu-hosts.md, "CANN and ATC").

The command is the port's, corrected and extended: `--op_precision_mode` (the port's readme
writes `--op_precision`, which atc does not have), `--precision_mode=force_fp16` with
`--keep_dtype` naming the loss head's nodes so the cross-entropy stays in float32, and an
`--input_shape` for every input. Without CANN the build writes the command into atc.sh,
which picks the chip from npu-smi when it runs unless --soc was given.

op_precision.ini is plain `OpType=mode` lines, the port's file: the ATC docs of CANN 5.0.4 show
only that form; those of 6.0.1 to 8.0 still state it ("key_value (算子类型=精度模式), one operator
per line") beside an example with [ByOpType] / [ByNodeName] sections, which a CANN before 6.0
does not know (docs/npu-hosts.md, "CANN and ATC").
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections import deque
from pathlib import Path

from npueval.core.errors import UserError

#: The port's operator precision modes (the repository's top-level op_precision.ini).
OP_PRECISION_INI = "Gelu=high_performance\nTanh=high_performance\n"
#: Where set_env.sh lives in the usual CANN installs (toolkit, newer cann, nnae; root or user).
SET_ENV_CANDIDATES = (
    "/usr/local/Ascend/ascend-toolkit/set_env.sh",
    "/usr/local/Ascend/cann/set_env.sh",
    "/usr/local/Ascend/nnae/set_env.sh",
    "~/Ascend/ascend-toolkit/set_env.sh",
)
_SOC = re.compile(r"^Ascend(310|910)[0-9A-Za-z_]*$")
LOG_TAIL = 20


def check_soc(soc: str) -> str:
    if soc == "auto" or _SOC.match(soc):
        return soc
    raise UserError(
        f"--soc {soc}: not an Ascend SoC name; pass the chip name npu-smi shows prefixed with Ascend "
        "(e.g. Ascend310P3, Ascend910B2C), or --soc auto"
    )


def find_atc() -> tuple[list[str], str] | None:
    """How to call atc (argv prefix) and where it was found, or None without CANN.

    `atc` on PATH (set_env.sh already sourced), then $ASCEND_TOOLKIT_HOME/bin/atc or
    $ASCEND_HOME_PATH/bin/atc, then a set_env.sh in the usual places, sourced for the call
    since atc needs the library paths it sets.
    """
    on_path = shutil.which("atc")
    if on_path:
        return [on_path], on_path
    for var in ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"):
        home = os.environ.get(var)
        if home and os.access(Path(home) / "bin" / "atc", os.X_OK):
            return [str(Path(home) / "bin" / "atc")], f"${var}/bin/atc"
    for candidate in SET_ENV_CANDIDATES:
        set_env = Path(candidate).expanduser()
        if set_env.is_file():
            return ["bash", "-c", f'source {shlex.quote(str(set_env))} >/dev/null && exec atc "$@"',
                    "atc"], str(set_env)
    return None


def atc_args(onnx_file: str, output_prefix: str, soc: str, input_shapes: dict[str, list[int]],
             keep_dtype_cfg: str | None) -> list[str]:
    """atc's arguments; file paths as given (relative to the build folder)."""
    shapes = ";".join(f"{name}:{','.join(map(str, dims))}" for name, dims in input_shapes.items())
    args = [
        f"--model={onnx_file}",
        "--framework=5",
        f"--output={output_prefix}",
        f"--input_shape={shapes}",
        "--input_format=ND",
        f"--soc_version={soc}",
        "--op_precision_mode=op_precision.ini",
        "--precision_mode=force_fp16",
        "--log=error",
    ]
    if keep_dtype_cfg is not None:
        args.append(f"--keep_dtype={keep_dtype_cfg}")
    return args


def write_inputs(folder: Path, keep_fp32_nodes: tuple[str, ...]) -> str | None:
    """op_precision.ini, and the keep_dtype cfg (one node name per line) when there are nodes to keep."""
    (folder / "op_precision.ini").write_text(OP_PRECISION_INI)
    if not keep_fp32_nodes:
        return None
    (folder / "keep_dtype.cfg").write_text("".join(f"{node}\n" for node in keep_fp32_nodes))
    return "keep_dtype.cfg"


def write_script(folder: Path, args: list[str], soc_given: bool) -> Path:
    """DIR/atc.sh: the same command, for a host with CANN (run it inside DIR)."""
    lines = [
        "#!/usr/bin/env bash",
        "# Written by `npueval build`: compiles the verified ONNX to an OM on a host with CANN.",
        "# Run it from this folder; source CANN's set_env.sh first if atc is not on PATH.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
    ]
    soc_arg = next(a for a in args if a.startswith("--soc_version="))
    if not soc_given:
        lines += [
            "# The chip, as npu-smi names it (310P3 → Ascend310P3).",
            "chip=$(npu-smi info | awk -F'|' '$3 ~ /^ *(OK|Warning|Alarm|Critical|UNKNOWN) *$/ "
            "{ split($2, f, \" \"); if (f[1] ~ /^[0-9]+$/) { print f[2]; exit } }')",
            '[ -n "$chip" ] || { echo "atc.sh: no chip name in npu-smi info; set --soc_version by hand" >&2; exit 2; }',
        ]
        args = [("--soc_version=Ascend${chip}" if a == soc_arg else a) for a in args]
    quoted = [shlex.quote(a) if "${chip}" not in a else f'"{a}"' for a in args]
    lines.append("exec atc " + " \\\n    ".join(quoted))
    path = folder / "atc.sh"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def run_atc(prefix: list[str], args: list[str], folder: Path) -> dict:
    """Run atc in `folder`, its output streamed into atc.log; a failure quotes the last lines."""
    log_path = folder / "atc.log"
    tail: deque[str] = deque(maxlen=LOG_TAIL)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*prefix, *args], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail.append(line.rstrip("\n"))
        code = proc.wait()
    if code != 0:
        quoted = " | ".join(t for t in tail if t.strip())[-1500:]
        raise UserError(f"atc failed (exit {code}); last lines of {log_path}: {quoted}")
    return {"returncode": code, "log": log_path.name}
