"""Every NPU chip of this host, from `npu-smi info` and `npu-smi info -m` (ascend.md §2).

`npu-smi info` gives, per chip, a card row (`| NPU  Name | Health | Power Temp Hugepages |`)
and a chip row (`| Chip [Device|Phy-ID] | Bus-Id | AICore Memory [HBM] |`), in the 310P,
910B and A3 layouts; a process table may follow. `npu-smi info -m` maps (NPU ID, Chip ID) to
the chip's logic id, which is what ACL and ASCEND_RT_VISIBLE_DEVICES count. Rows are read by
their cells, so column widths and extra columns do not matter.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass

from npueval.eval.errors import RunError, UserError

log = logging.getLogger(__name__)

HEALTH = ("OK", "Warning", "Alarm", "Critical", "UNKNOWN")
_USAGE = re.compile(r"(\d+)\s*/\s*(\d+)")
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")


@dataclass(frozen=True)
class Device:
    card: int  # npu-smi's NPU id (not contiguous on many hosts)
    chip: int  # the chip's index on its card
    logic_id: int  # ACL's device id with no ASCEND_RT_VISIBLE_DEVICES
    name: str  # e.g. 310P3
    soc_version: str  # ATC's --soc_version, e.g. Ascend310P3
    health: str
    mem_used_mb: int
    mem_total_mb: int
    bus_id: str

    @property
    def healthy(self) -> bool:
        return self.health == "OK"

    def to_json(self) -> dict:
        return asdict(self)


class NpuSmiError(RunError):
    """npu-smi printed something this parser cannot read."""


def _cells(line: str) -> list[str] | None:
    line = line.strip()
    if not line.startswith("|"):
        return None
    return [c.strip() for c in line.strip("|").split("|")]


def _chip_row_header(lines: list[str]) -> list[str]:
    """The chip row's header fields: ["Chip", "Device"] (310P), ["Chip"] (910B), ["Chip", "Phy-ID"] (A3)."""
    for line in lines:
        cells = _cells(line)
        if cells and len(cells) >= 2 and cells[0].split()[:1] == ["Chip"] and cells[1] == "Bus-Id":
            return cells[0].split()
    return ["Chip"]


def parse_info(text: str) -> list[dict]:
    """The chips of `npu-smi info`: card, chip, name, health, memory, bus id, and the logic id
    where the table has a Device column (310P), else None."""
    chips = []
    lines = text.splitlines()
    has_device_column = _chip_row_header(lines)[1:2] == ["Device"]
    i = 0
    while i < len(lines):
        cells = _cells(lines[i])
        if cells is None or len(cells) < 3 or cells[1] not in HEALTH:
            i += 1
            continue
        card_fields = cells[0].split()
        chip_cells = _cells(lines[i + 1]) if i + 1 < len(lines) else None
        if len(card_fields) < 2 or not card_fields[0].isdigit() or chip_cells is None or len(chip_cells) < 3:
            raise NpuSmiError(f"npu-smi info: cannot read the chip of this card row: {lines[i].strip()!r}")
        chip_fields = chip_cells[0].split()
        usages = _USAGE.findall(chip_cells[2])
        if not chip_fields or not chip_fields[0].isdigit() or not _BUS_ID.match(chip_cells[1]) or not usages:
            raise NpuSmiError(f"npu-smi info: cannot read this chip row: {lines[i + 1].strip()!r}")
        used, total = usages[-1]  # 910B: Memory then HBM; the device's own memory is the last
        chips.append(
            {
                "card": int(card_fields[0]),
                "chip": int(chip_fields[0]),
                "logic_id": int(chip_fields[1]) if has_device_column and len(chip_fields) > 1 else None,
                "name": " ".join(card_fields[1:]),
                "health": cells[1],
                "mem_used_mb": int(used),
                "mem_total_mb": int(total),
                "bus_id": chip_cells[1],
            }
        )
        i += 2
    if not chips and text.strip():
        first = [ln.strip() for ln in lines if ln.strip()][:3]
        raise NpuSmiError(f"npu-smi info: no chip rows in its output, which begins {' / '.join(first)!r}")
    return chips


def parse_mapping(text: str) -> dict[tuple[int, int], int]:
    """`npu-smi info -m`: (NPU ID, Chip ID) → Chip Logic ID; the Mcu rows (logic id "-") are skipped."""
    mapping = {}
    header_seen = False
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[:2] == ["NPU", "ID"]:
            header_seen = True
            continue
        if len(fields) >= 4 and fields[0].lstrip("-").isdigit() and fields[1].isdigit():
            if fields[2] == "-":
                continue  # the card's MCU
            if not fields[2].isdigit():
                raise NpuSmiError(f"npu-smi info -m: cannot read this row: {line.strip()!r}")
            mapping[(int(fields[0]), int(fields[1]))] = int(fields[2])
    if not header_seen and text.strip():
        first = [ln.strip() for ln in text.splitlines() if ln.strip()][:2]
        raise NpuSmiError(f"npu-smi info -m: no 'NPU ID … Chip Logic ID' table in its output: {' / '.join(first)!r}")
    return mapping


def devices_from(info_text: str, mapping_text: str | None) -> list[Device]:
    mapping = parse_mapping(mapping_text) if mapping_text else {}
    devices = []
    for chip in parse_info(info_text):
        logic_id = mapping.get((chip["card"], chip["chip"]), chip["logic_id"])
        if logic_id is None:
            raise NpuSmiError(
                f"npu-smi: no logic id for card {chip['card']} chip {chip['chip']} (no Device column, "
                "and `npu-smi info -m` does not list it)"
            )
        devices.append(Device(**{**chip, "logic_id": logic_id}, soc_version=f"Ascend{chip['name'].replace(' ', '')}"))
    return sorted(devices, key=lambda d: d.logic_id)


def discover() -> list[Device]:
    """This host's chips, healthy or not; [] where npu-smi is not installed."""
    exe = shutil.which("npu-smi")
    if exe is None:
        return []
    info = _run([exe, "info"])
    try:
        mapping = _run([exe, "info", "-m"])
    except NpuSmiError as exc:
        # The 310P table's Device column is the logic id too (ascend.md §2.1); elsewhere
        # devices_from says which chip has none.
        log.info("%s; taking logic ids from the Device column of `npu-smi info`", exc)
        mapping = None
    return devices_from(info, mapping)


def soc_version() -> str:
    """ATC's --soc_version for this host's chips (310P3 → Ascend310P3)."""
    if shutil.which("npu-smi") is None:
        raise UserError("--soc auto: npu-smi is not on PATH, so the chip is unknown; pass --soc, e.g. --soc Ascend310P3")
    socs = sorted({d.soc_version for d in discover()})
    if len(socs) != 1:
        raise UserError(
            f"--soc auto: npu-smi shows {'no chip' if not socs else 'several chip kinds: ' + ', '.join(socs)}; "
            "pass --soc for the chip to build for"
        )
    return socs[0]


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        first = (result.stderr or result.stdout).strip().splitlines()[:2]
        raise NpuSmiError(f"`{' '.join(argv)}` failed (exit {result.returncode}): {' / '.join(first)}")
    return result.stdout
