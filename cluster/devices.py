"""Every NPU chip of this host, from `npu-smi info` and `npu-smi info -m` (docs/npu-hosts.md).

`npu-smi info` gives, per chip, a card row (`| NPU  Name | Health | Power Temp Hugepages |`)
and a chip row (`| Chip [Device|Phy-ID] | Bus-Id | AICore Memory [HBM] |`), in the 310P,
910B and A3 layouts; a process table may follow. `npu-smi info -m` maps (NPU ID, Chip ID) to
the chip's logic id, which is what ACL and ASCEND_RT_VISIBLE_DEVICES count. Rows are read by
their cells, so column widths and extra columns do not matter. A sick chip may print `NA` where
a bus id or a memory figure belongs, and a health string other than OK: both are read as they
are (the chip is then unhealthy), never taken for a malformed table.

npu-smi talks to the driver through DCMI, which some hosts grant to root only while ACL works
for every user: there `npu-smi info` prints "dcmi module initialize failed. ret is -8005" and
exits 187. `discover` raises NpuSmiError for it; `discover_or_warn` is for the callers that can
do without the health filter (Ray's own NPU count then stands).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass

from npueval.core.errors import RunError, UserError

log = logging.getLogger(__name__)

HEALTHY = "OK"
_USAGE = re.compile(r"(\d+)\s*/\s*(\d+)")
_VERSION = re.compile(r"npu-smi\s+(\S+)")
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")


@dataclass(frozen=True)
class Device:
    card: int  # npu-smi's NPU id (not contiguous on many hosts)
    chip: int  # the chip's index on its card
    logic_id: int  # ACL's device id with no ASCEND_RT_VISIBLE_DEVICES
    name: str  # e.g. 310P3
    soc_version: str  # ATC's --soc_version, e.g. Ascend310P3
    health: str  # OK, Warning, Alarm, Critical, or whatever else npu-smi prints
    mem_used_mb: int | None  # None where npu-smi prints NA
    mem_total_mb: int | None
    bus_id: str  # "NA" on a chip npu-smi cannot read

    @property
    def healthy(self) -> bool:
        return self.health == HEALTHY

    def to_json(self) -> dict:
        return asdict(self)


class NpuSmiError(RunError):
    """npu-smi failed, or printed something this parser cannot read."""


def _cells(line: str) -> list[str] | None:
    line = line.strip()
    if not line.startswith("|"):
        return None
    return [c.strip() for c in line.strip("|").split("|")]


def _leading_int(cell: str) -> int | None:
    first = cell.split()[:1]
    return int(first[0]) if first and first[0].isdigit() else None


def _chip_table(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """The chip row's header fields (["Chip", "Device"] on 310P, ["Chip"] on 910B, ["Chip",
    "Phy-ID"] on A3) and the table's data rows, up to the process table if there is one."""
    header, rows = ["Chip"], []
    for line in lines:
        cells = _cells(line)
        if cells is None:
            continue
        if any(c.startswith("Process id") for c in cells):
            break  # the process table: its rows are (NPU, chip) pairs of processes, not chips
        if len(cells) >= 2 and cells[0].split()[:1] == ["Chip"] and cells[1] == "Bus-Id":
            header = cells[0].split()
        elif len(cells) >= 3 and _leading_int(cells[0]) is not None:
            rows.append(cells)
    return header, rows


def parse_info(text: str) -> list[dict]:
    """The chips of `npu-smi info`: card, chip, name, health, memory, bus id, and the logic id
    where the table has a Device column (310P), else None. Rows come in (card row, chip row) pairs."""
    header, rows = _chip_table(text.splitlines())
    has_device_column = header[1:2] == ["Device"]
    if len(rows) % 2:
        raise NpuSmiError(f"npu-smi info: a card row without its chip row: {' | '.join(rows[-1])!r}")
    chips = []
    for card, chip in zip(rows[::2], rows[1::2]):
        card_fields, chip_fields = card[0].split(), chip[0].split()
        if len(card_fields) < 2 or not (_BUS_ID.match(chip[1]) or chip[1] == "NA"):
            raise NpuSmiError(f"npu-smi info: cannot read this card and chip row: {' | '.join(card)!r} / "
                              f"{' | '.join(chip)!r}")
        usages = _USAGE.findall(chip[2])
        used, total = (int(usages[-1][0]), int(usages[-1][1])) if usages else (None, None)  # 910B: HBM is the last
        logic_id = chip_fields[1] if has_device_column and len(chip_fields) > 1 else None
        chips.append({
            "card": int(card_fields[0]),
            "chip": int(chip_fields[0]),
            "logic_id": int(logic_id) if logic_id is not None and logic_id.isdigit() else None,
            "name": " ".join(card_fields[1:]),
            "health": card[1] or "UNKNOWN",
            "mem_used_mb": used,
            "mem_total_mb": total,
            "bus_id": chip[1],
        })
    if not chips and text.strip():
        first = [ln.strip() for ln in text.splitlines() if ln.strip()][:3]
        raise NpuSmiError(f"npu-smi info: no chip rows in its output, which begins {' / '.join(first)!r}")
    return chips


def parse_version(text: str) -> str | None:
    """The driver version in `npu-smi info`'s first row (`| npu-smi 24.1.0.1  Version: 24.1.0.1 |`)."""
    for line in text.splitlines()[:4]:
        found = _VERSION.search(line)
        if found:
            return found.group(1)
    return None


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


@dataclass(frozen=True)
class Host:
    """What `npu-smi info` says of this host: its chips and the driver version it prints."""

    devices: list[Device]
    driver_version: str | None


def read_host() -> Host | None:
    """This host's chips, healthy or not, and its driver version; None where npu-smi is not
    installed. Raises NpuSmiError where npu-smi fails or prints what cannot be read."""
    exe = shutil.which("npu-smi")
    if exe is None:
        return None
    info = _run([exe, "info"])
    try:
        mapping = _run([exe, "info", "-m"])
    except NpuSmiError as exc:
        # The 310P table's Device column is the logic id too; elsewhere devices_from says which
        # chip has none.
        log.info("%s; taking logic ids from the Device column of `npu-smi info`", exc)
        mapping = None
    return Host(devices_from(info, mapping), parse_version(info))


def discover() -> list[Device]:
    """This host's chips, healthy or not; [] where npu-smi is not installed (NpuSmiError where it fails)."""
    host = read_host()
    return host.devices if host else []


def discover_or_warn(consequence: str) -> list[Device] | None:
    """This host's chips, or None with a warning that names npu-smi's failure and `consequence`
    (what is done without them): for callers to whom the chip list is a filter, not a need."""
    try:
        return discover()
    except NpuSmiError as exc:
        log.warning("%s; %s", exc, consequence)
        return None


def soc_version() -> str:
    """ATC's --soc_version for this host's chips (310P3 → Ascend310P3)."""
    if shutil.which("npu-smi") is None:
        raise UserError("--soc auto: npu-smi is not on PATH, so the chip is unknown; pass --soc, e.g. --soc "
                        "Ascend310P3")
    try:
        devices = discover()
    except NpuSmiError as exc:
        raise UserError(f"--soc auto: {exc}; pass --soc, e.g. --soc Ascend310P3") from None
    socs = sorted({d.soc_version for d in devices})
    if len(socs) != 1:
        raise UserError(
            f"--soc auto: npu-smi shows {'no chip' if not socs else 'several chip kinds: ' + ', '.join(socs)}; "
            "pass --soc for the chip to build for"
        )
    return socs[0]


#: What npu-smi prints where DCMI is closed to this user (root-only on some hosts) or the chip is
#: held by another container: ACL may still work.
DCMI_FAILED = "dcmi module initialize failed"


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        said = [ln.strip() for ln in (result.stdout + "\n" + result.stderr).splitlines() if ln.strip()]
        dcmi = any(DCMI_FAILED in ln.lower() for ln in said)
        hint = " (DCMI refused this user: some hosts open it to root only, while ACL still works)" if dcmi else ""
        raise NpuSmiError(f"`{' '.join(argv)}` failed (exit {result.returncode}): {' / '.join(said[-2:])}{hint}")
    return result.stdout
