"""`npueval doctor` on hosts the fakes make: a complete NPU host, one missing a part, one whose
npu-smi DCMI refuses, and a machine without NPUs. Each is a real `npueval doctor` process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_data import FAKES


@pytest.fixture
def host(tmp_path):
    """The environment of a 310P3 Duo host with CANN 8.2.RC1 sourced, pyACL and the current ais_bench."""
    toolkit = tmp_path / "Ascend" / "ascend-toolkit" / "latest"
    (toolkit / "x86_64-linux").mkdir(parents=True)
    (toolkit / "x86_64-linux" / "ascend_toolkit_install.info").write_text(
        "package_name=Ascend-cann-toolkit\nversion=8.2.RC1\narch=x86_64\n"
        f"path={toolkit}/x86_64-linux\n")
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("ASCEND_RT_VISIBLE_DEVICES", "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES")}
    env.update(PATH=os.pathsep.join([str(FAKES), str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
               PYTHONPATH=os.pathsep.join([str(FAKES / "pyacl"), str(FAKES)]),
               ASCEND_TOOLKIT_HOME=str(toolkit), TMPDIR=str(tmp_path / "tmp"),
               RAY_TMPDIR="/tmp")  # a local Ray's own folder: tmp_path is too long for its socket paths
    return env


def doctor(env: dict, *args: str):
    done = subprocess.run([sys.executable, "-m", "npueval.eval", "doctor", "--json", *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    return done.returncode, report, {c["name"]: c for c in report["checks"]}


def test_a_complete_npu_host_is_ready_for_an_om_run(host):
    code, report, rows = doctor(host)
    assert code == 0 and report["om_ready"] and report["npu_host"] and report["backend"] == "om"
    assert {r["verdict"] for r in rows.values()} == {"ok"}, rows
    assert rows["npu-smi"]["found"] == "4 chip(s) (310P3), all OK; driver 24.1.0.1"
    assert rows["CANN"]["found"].endswith("(set_env.sh sourced), version 8.2.RC1")
    assert rows["atc"]["found"].startswith(str(FAKES / "atc"))
    assert "API 2024 on (infer_pipeline)" in rows["ais_bench"]["found"]
    assert rows["pyACL"]["found"] == "4 device(s) visible to ACL, Ascend310P3"
    assert "would see 4 NPU(s)" in rows["Ray"]["found"] and "on the 4 NPU(s) Ray sees here" in report["why"]
    assert rows["temp folder"]["found"].startswith(host["TMPDIR"])


def test_the_table_a_person_reads(host):
    done = subprocess.run([sys.executable, "-m", "npueval.eval", "doctor"], env=host, capture_output=True, text=True,
                          timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[0].split()[:2] == ["Python", "ok"]
    assert lines[-1].startswith("npueval run here: om (om ready): an om run can start on the 4 NPU(s)")


def test_the_pre_2024_ais_bench_is_a_warning_with_its_fix(host):
    code, report, rows = doctor({**host, "FAKE_AIS_BENCH_OLD": "1"})
    assert code == 0 and report["om_ready"]
    assert rows["ais_bench"]["verdict"] == "warn" and "API pre-2024 (no infer_pipeline)" in rows["ais_bench"]["found"]


def test_without_ais_bench_an_npu_host_cannot_start_an_om_run(host):
    code, report, rows = doctor({**host, "PYTHONPATH": str(FAKES / "pyacl")})
    assert code == 1 and not report["om_ready"] and report["backend"] == "onnx"
    assert rows["ais_bench"]["verdict"] == "fail" and "No module named 'aclruntime'" in rows["ais_bench"]["found"]
    assert "install the vendor wheels" in rows["ais_bench"]["fix"]
    assert report["why"].startswith("an om run cannot start: ais_bench: cannot import ais_bench")


def test_npu_smi_refused_by_dcmi_is_a_warning_when_acl_works(host):
    code, report, rows = doctor({**host, "FAKE_NPU_SMI_INFO": str(FAKES / "npu-smi-dcmi-8005.txt"),
                                 "FAKE_NPU_SMI_EXIT": "187"})
    assert code == 0 and report["om_ready"]
    assert rows["npu-smi"]["verdict"] == "warn" and "exit 187" in rows["npu-smi"]["found"]
    assert "Ray's own NPU count stands" in rows["npu-smi"]["fix"]


def test_sick_chips_are_named(host):
    code, _, rows = doctor({**host, "FAKE_NPU_SMI_INFO": str(FAKES / "npu-smi-info-310p3-duo-sick.txt")})
    assert code == 0 and rows["npu-smi"]["verdict"] == "warn"
    assert "logic id 1 Warning; logic id 3 UNKNOWN" in rows["npu-smi"]["found"]


@pytest.mark.parametrize("visible, verdict, seen", [("1,3", "ok", 2), ("0, 1", "fail", None)])
def test_the_users_visible_list(host, visible, verdict, seen):
    code, _, rows = doctor({**host, "ASCEND_RT_VISIBLE_DEVICES": visible,
                            "RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES": "1"})
    assert rows["Ray"]["verdict"] == verdict and (code == 0) == (verdict == "ok")
    assert "each actor opens its own id among the visible chips" in rows["Ray"]["found"]
    if seen is not None:
        assert f"would see {seen} NPU(s)" in rows["Ray"]["found"]


def test_a_temp_folder_ais_bench_refuses_stops_an_om_run(host, tmp_path):
    bad = tmp_path / "my tmp"
    bad.mkdir()
    code, _report, rows = doctor({**host, "TMPDIR": str(bad)})
    assert code == 1 and rows["temp folder"]["verdict"] == "fail" and "set TMPDIR" in rows["temp folder"]["fix"]


def without_npus(host: dict) -> dict:
    env = {**host, "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]), "PYTHONPATH": ""}
    del env["ASCEND_TOOLKIT_HOME"]
    return env


@pytest.mark.parametrize("npus", [True, False])
def test_a_temp_folder_no_local_ray_starts_in_fails_on_any_host(host, tmp_path, npus):
    """Ray encodes its socket paths as ASCII: a TMPDIR that is not stops every backend's run."""
    bad = tmp_path / "临时"
    bad.mkdir()
    env = {**(host if npus else without_npus(host)), "TMPDIR": str(bad)}
    del env["RAY_TMPDIR"]
    code, report, rows = doctor(env)
    assert code == 1 and report["npu_host"] == npus and not report["om_ready"] and report["backend"] == "none"
    row = rows["temp folder"]
    assert row["verdict"] == "fail" and row["fix"] == "set TMPDIR to a folder whose path is ASCII, e.g. TMPDIR=/tmp"
    assert row["found"].startswith(f"TMPDIR={bad}: a local Ray cannot start in a folder whose path is not ASCII")
    assert report["why"] == f"temp folder: {row['found']}"
    table = subprocess.run([sys.executable, "-m", "npueval.eval", "doctor"], env=env, capture_output=True, text=True,
                           timeout=120).stdout
    assert table.splitlines()[-1] == f"npueval run here: none (no local Ray): temp folder: {row['found']}"


def test_a_temp_folder_too_long_for_rays_sockets_fails(host, tmp_path):
    long = tmp_path / ("x" * 60)
    long.mkdir()
    env = {**without_npus(host), "TMPDIR": str(long)}
    del env["RAY_TMPDIR"]
    code, report, rows = doctor(env)
    assert code == 1 and report["backend"] == "none" and rows["temp folder"]["verdict"] == "fail"
    assert "bytes over the 107 a Unix socket's path may have" in rows["temp folder"]["found"]
    assert rows["temp folder"]["fix"].startswith("set TMPDIR to a folder of at most ")


def test_a_machine_without_npus_runs_onnx_on_cpu_and_exits_0(host):
    code, report, rows = doctor(without_npus(host))
    assert code == 0 and not report["npu_host"] and report["backend"] == "onnx"
    assert "runs go to onnx on CPU" in report["why"]
    assert "fail" not in {r["verdict"] for r in rows.values()}
    assert rows["ais_bench"]["verdict"] == "info"


def test_a_check_that_breaks_is_a_failed_row_not_a_traceback(monkeypatch):
    from npueval.eval import doctor as module

    def broken(facts):
        raise KeyError("surprise")

    monkeypatch.setattr(module, "CHECKS", [("npu-smi", broken), *module.CHECKS[2:]])
    report = module.diagnose()
    (row,) = [c for c in report.checks if c.name == "npu-smi"]
    assert row.verdict in ("fail", "info") and row.found == "the check itself failed: KeyError: 'surprise'"


def test_the_set_env_sh_to_source_is_quoted(monkeypatch, tmp_path):
    """A set_env.sh under a home folder with a space: the fix is a command that sources that file."""
    import shlex

    import npueval.build.atc as atc
    from npueval.eval.doctor import WARN, check_cann

    set_env = tmp_path / "Jane Doe" / "Ascend" / "ascend-toolkit" / "set_env.sh"
    set_env.parent.mkdir(parents=True)
    set_env.write_text("")
    monkeypatch.delenv("ASCEND_TOOLKIT_HOME", raising=False)
    monkeypatch.delenv("ASCEND_HOME_PATH", raising=False)
    monkeypatch.setattr(atc, "SET_ENV_CANDIDATES", (str(set_env),))
    check = check_cann({})
    assert check.verdict == WARN and check.fix.startswith(f"source {shlex.quote(str(set_env))} (atc")
    assert shlex.split(check.fix.split(" (")[0]) == ["source", str(set_env)]
