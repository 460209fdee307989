"""`npu-smi` parsing (the captures in tests/fakes, byte for byte; docs/npu-hosts.md, section 7)
and `npueval devices`."""

import dataclasses
import json
import os
import subprocess

import pytest
from run_data import FAKES

from npueval.cluster.devices import (
                                     Device,
    NpuSmiError,
    devices_from,
    discover,
    discover_or_warn,
    parse_info,
    parse_mapping,
    parse_version,
)

DUO = (FAKES / "npu-smi-info-310p3-duo.txt").read_text()
DUO_MAP = (FAKES / "npu-smi-info-m-310p3-duo.txt").read_text()
A2 = (FAKES / "npu-smi-info-910b.txt").read_text()
MODELZOO = (FAKES / "npu-smi-info-310p3-modelzoo.txt").read_text()

DUO_DEVICES = [
    Device(1, 0, 0, "310P3", "Ascend310P3", "OK", 16302, 44280, "0000:01:00.0"),
    Device(1, 1, 1, "310P3", "Ascend310P3", "OK", 15543, 43693, "0000:01:00.0"),
    Device(2, 0, 2, "310P3", "Ascend310P3", "OK", 35563, 44280, "0000:02:00.0"),
    Device(2, 1, 3, "310P3", "Ascend310P3", "OK", 35204, 43693, "0000:02:00.0"),
]


def test_310p3_duo_two_chips_per_card_process_table_ignored():
    assert "16302/ 44280" in DUO  # the capture is byte-exact: five digits, no space before "/"
    assert devices_from(DUO, DUO_MAP) == DUO_DEVICES
    assert devices_from(DUO, None) == DUO_DEVICES  # the Device column is the logic id


def test_910b_layout_hbm_memory_and_logic_ids_from_the_mapping():
    mapping = ("NPU ID   Chip ID   Chip Logic ID   Chip Name\n"
               "0 0 0 Ascend 910B2C\n0 1 - Mcu\n1 0 1 Ascend 910B2C\n1 1 - Mcu\n")
    assert devices_from(A2, mapping) == [
        Device(0, 0, 0, "910B2C", "Ascend910B2C", "OK", 20701, 65536, "0000:5A:00.0"),
        Device(1, 0, 1, "910B2C", "Ascend910B2C", "OK", 20687, 65536, "0000:19:00.0"),
    ]
    with pytest.raises(NpuSmiError, match="no logic id for card 0 chip 0"):
        devices_from(A2, None)  # 910B has no Device column


def test_mapping_capture_with_tabs_trailing_spaces_and_the_mcu_row():
    text = (FAKES / "npu-smi-info-m-910b3.txt").read_text()
    assert "\t" in text and text.splitlines()[0].endswith(" ")
    assert parse_mapping(text) == {(0, 0): 0}


def test_modelzoo_template_narrow_layout():
    devices = devices_from(MODELZOO, None)
    assert [(d.card, d.chip, d.logic_id, d.mem_used_mb, d.mem_total_mb, d.bus_id) for d in devices] == [
        (0, 0, 0, 1074, 21534, "0000:82:00.0"), (1, 0, 1, 1070, 21534, "0000:89:00.0")]


def test_no_running_processes_rows_extra_columns_and_other_widths():
    (process_row,) = [ln for ln in DUO.splitlines() if "3277562" in ln]
    no_procs = DUO.replace(process_row, "| No running processes found in NPU 1" + " " * 64 + "|")
    extra = "\n".join(line.rstrip() + " extra col |" if line.strip().startswith("|") else line
                      for line in DUO.splitlines())
    narrow = "\n".join(" ".join(line.split()) for line in DUO.splitlines())
    for text in (no_procs, extra, narrow):
        assert devices_from(text, DUO_MAP) == DUO_DEVICES


def test_a_sick_chip_with_na_fields_and_any_health_string_is_read_not_fatal():
    """The Duo capture with chip 1 at Warning and chip 3 at UNKNOWN ("not present or not started",
    npu-smi's health doc) printing NA for its bus id, temperature and memory: no public capture of
    a sick 310P3 was found, so this one is written from the Duo's, field by field."""
    text = (FAKES / "npu-smi-info-310p3-duo-sick.txt").read_text()
    devices = devices_from(text, DUO_MAP)
    assert [(d.logic_id, d.health, d.healthy) for d in devices] == [
        (0, "OK", True), (1, "Warning", False), (2, "OK", True), (3, "UNKNOWN", False)]
    assert (devices[3].bus_id, devices[3].mem_used_mb, devices[3].mem_total_mb) == ("NA", None, None)
    assert devices[:3] == [DUO_DEVICES[0], dataclasses.replace(DUO_DEVICES[1], health="Warning"), DUO_DEVICES[2]]
    assert devices_from(text.replace("UNKNOWN", "Abnormal"), DUO_MAP)[3].health == "Abnormal"  # any string


def test_the_driver_version_from_the_first_row():
    assert parse_version(DUO) == "24.1.0.1" and parse_version(A2) == "23.0.2.1"
    assert parse_version(MODELZOO) is None  # the template has no version row


def test_a_card_named_by_digits_only():
    """The Atlas 300I (310) of gpustack's npu-smi 20.2.0 capture names its chips `310`."""
    text = ("| NPU     Name      | Health          | Power(W)          Temp(C)              |\n"
            "| Chip    Device    | Bus-Id          | AICore(%)         Memory-Usage(MB)     |\n"
            "| 215     310       | OK              | 12.8              56                   |\n"
            "| 0       0         | 0000:DA:00.0    | 0                 2703 / 8192          |\n")
    (device,) = devices_from(text, None)
    assert (device.card, device.name, device.soc_version, device.logic_id) == (215, "310", "Ascend310", 0)


def test_every_chip_is_listed_healthy_or_not():
    text = DUO.replace("| 2       310P3                 | OK    ", "| 2       310P3                 | Alarm ", 1)
    devices = devices_from(text, DUO_MAP)
    assert [d.health for d in devices] == ["OK", "OK", "Alarm", "OK"] and not devices[2].healthy


@pytest.mark.parametrize("text, message, quoted", [
    ("npu-smi: command failed\nsomething else entirely\n", "no chip rows in its output, which begins",
     "something else entirely"),
    ("| 0  310P3 | OK | NA 40 0 / 0 |\n| garbage |\n", "a card row without its chip row", "0  310P3 | OK"),
    ("| 0  310P3 | OK | NA 40 0 / 0 |\n| 0 0 | not-a-bus | 0 1074 / 21534 |\n", "cannot read this card and chip row",
     "not-a-bus"),
])
def test_unreadable_output_quotes_what_it_could_not_read(text, message, quoted):
    with pytest.raises(NpuSmiError, match=message) as err:
        parse_info(text)
    assert quoted in str(err.value)


def devices_cli(*args, env=None):
    return subprocess.run(["npueval", "devices", *args], capture_output=True, text=True, env=env, timeout=60)


def test_devices_json_on_a_310p3_duo_host():
    env = {**os.environ, "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}"}
    r = devices_cli("--json", env=env)
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert listed == [d.to_json() for d in DUO_DEVICES]
    assert set(listed[0]) == {"card", "chip", "logic_id", "name", "soc_version", "health", "mem_used_mb",
                              "mem_total_mb", "bus_id"}
    table = devices_cli(env=env)
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["logic", "card", "chip"]
    assert len(table.stdout.splitlines()) == 5


def test_devices_without_npu_smi_is_an_empty_list():
    import sys

    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}/usr/bin:/bin"}
    r = devices_cli("--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_devices_with_unreadable_npu_smi_output_exits_1_with_one_line(tmp_path):
    bad = tmp_path / "info.txt"
    bad.write_text("Some banner the parser has never seen\n")
    env = {**os.environ, "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}", "FAKE_NPU_SMI_INFO": str(bad)}
    r = devices_cli("--json", env=env)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "Some banner the parser has never seen" in r.stderr


DCMI = FAKES / "npu-smi-dcmi-8005.txt"


def test_npu_smi_refused_by_dcmi_is_named_and_can_be_done_without(monkeypatch, caplog):
    """Where DCMI is root-only, `npu-smi info` prints two lines and exits 187 (hw-native-sys/simpler
    PR #2043, the capture byte for byte): discover says so; discover_or_warn warns and goes on."""
    assert DCMI.read_bytes() == (b"DrvMngGetConsoleLogLevel failed. (ret=4)\n"
                                 b"dcmi module initialize failed. ret is -8005\n")
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPU_SMI_INFO", str(DCMI))
    monkeypatch.setenv("FAKE_NPU_SMI_EXIT", "187")
    with pytest.raises(NpuSmiError, match=r"`.*npu-smi info` failed \(exit 187\): .*dcmi module initialize failed\. "
                                          r"ret is -8005 \(DCMI refused this user: some hosts open it to root only"):
        discover()
    with caplog.at_level("WARNING"):
        assert discover_or_warn("the health filter is skipped") is None
    (record,) = caplog.records
    assert "exit 187" in record.getMessage() and record.getMessage().endswith("; the health filter is skipped")


def test_devices_command_on_a_dcmi_refusal_exits_1_with_one_line():
    env = {**os.environ, "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}", "FAKE_NPU_SMI_INFO": str(DCMI),
           "FAKE_NPU_SMI_EXIT": "187"}
    r = devices_cli(env=env)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "ret is -8005" in r.stderr
