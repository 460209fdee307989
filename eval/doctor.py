"""`npueval doctor`: what this host has for an om run, one row per part, each with a verdict and the fix.

A user runs it on a new host before anything else (docs/npu-hosts.md). Every check is read-only
and stands alone: one that breaks becomes a failed row, never a traceback. The verdict at the end
says what `npueval run` does here: the om backend on the NPUs Ray sees, or onnx on CPU on a
machine without NPUs (not a failure); on an NPU host that cannot start an om run, what stops it.
"""

from __future__ import annotations

import glob
import importlib
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: str  # ok | warn (works, but see the fix) | fail (an om run cannot start) | info (not needed here)
    found: str
    fix: str = ""


@dataclass(frozen=True)
class Report:
    checks: list[Check]
    npu_host: bool  # npu-smi, pyACL or /dev/davinci* says this machine has NPUs
    om_ready: bool
    backend: str  # what `npueval run` (backend auto) uses here, for a model that has an OM; none: no local Ray starts
    why: str
    facts: dict = field(default_factory=dict, repr=False)

    @property
    def exit_code(self) -> int:
        """1 where a row fails: an NPU host that cannot start an om run, or a host where no local Ray starts."""
        return 1 if any(c.verdict == FAIL for c in self.checks) else 0

    def to_json(self) -> dict:
        return {"npu_host": self.npu_host, "om_ready": self.om_ready, "backend": self.backend, "why": self.why,
                "checks": [asdict(c) for c in self.checks]}


def diagnose() -> Report:
    facts: dict = {}
    checks = [_guarded(name, check, facts) for name, check in CHECKS]
    npu_host = bool(facts.get("npu_smi_found") or facts.get("acl_devices") or glob.glob("/dev/davinci[0-9]*"))
    every_run = facts.get("stops_every_run", set())  # rows whose fail stops a local Ray, whatever the backend
    if not npu_host:  # the rest is not needed for onnx on CPU: what an NPU host would need is information
        checks = [replace(c, verdict=INFO) if c.verdict == FAIL and c.name not in every_run else c for c in checks]
    blocking = [c for c in checks if c.verdict == FAIL]
    ray_npus = facts.get("ray_npus", 0)
    if any(c.name in every_run for c in blocking):
        backend, why = "none", "; ".join(f"{c.name}: {c.found}" for c in blocking if c.name in every_run)
    elif not npu_host:
        backend, why = "onnx", "no NPU here (no npu-smi, no pyACL, no /dev/davinci*): runs go to onnx on CPU"
    elif blocking:
        backend, why = "onnx", "an om run cannot start: " + "; ".join(f"{c.name}: {c.found}" for c in blocking)
    else:
        backend, why = "om", (f"an om run can start on the {ray_npus:g} NPU(s) Ray sees here, for a model built with "
                              "an OM; a model without one runs on CPU with onnx")
    return Report(checks, npu_host, npu_host and not blocking, backend, why, facts)


def _guarded(name: str, check: Callable[[dict], Check], facts: dict) -> Check:
    try:
        return check(facts)
    except Exception as exc:
        from npueval.core.errors import root_cause

        return Check(name, FAIL, f"the check itself failed: {root_cause(exc)}", "report it with this output")


def check_npu_smi(facts: dict) -> Check:
    from npueval.cluster.devices import NpuSmiError, read_host

    try:
        host = read_host()
    except NpuSmiError as exc:
        facts["npu_smi_found"] = True
        return Check("npu-smi", WARN, str(exc),
                     "npueval runs without it (no chip health check; Ray's own NPU count stands); for the health "
                     "check run as a user DCMI allows (root on some hosts)")
    if host is None:
        return Check("npu-smi", INFO, "not on PATH", "on an NPU host: install the driver (it brings npu-smi)")
    facts["npu_smi_found"] = True
    facts["devices"] = host.devices
    names = ", ".join(sorted({d.name for d in host.devices})) or "no chip"
    sick = [d for d in host.devices if not d.healthy]
    health = "all OK" if not sick else "; ".join(f"logic id {d.logic_id} {d.health}" for d in sick)
    found = f"{len(host.devices)} chip(s) ({names}), {health}; driver {host.driver_version or 'version not shown'}"
    if not host.devices:
        return Check("npu-smi", WARN, found, "check the driver's installation (npu-smi lists no chip)")
    if sick:
        return Check("npu-smi", WARN, found,
                     "a Ray npueval starts leaves sick chips out (--allow-unhealthy keeps them)")
    return Check("npu-smi", OK, found)


def check_cann(facts: dict) -> Check:
    from npueval.build.atc import SET_ENV_CANDIDATES

    home = os.environ.get("ASCEND_TOOLKIT_HOME") or os.environ.get("ASCEND_HOME_PATH")
    set_env = next((str(Path(c).expanduser()) for c in SET_ENV_CANDIDATES if Path(c).expanduser().is_file()), None)
    if home:
        version = cann_version(Path(home))
        facts["cann_version"] = version
        return Check("CANN", OK, f"{home} (set_env.sh sourced), version {version or 'unknown'}")
    if set_env:
        return Check("CANN", WARN, f"{set_env} found but not sourced in this shell",
                     f"source {shlex.quote(set_env)} (atc, pyACL and ais_bench need the variables it sets)")
    return Check("CANN", INFO, "no set_env.sh in the usual places, no $ASCEND_TOOLKIT_HOME",
                 "on an NPU host: install the CANN toolkit, then source its set_env.sh")


def cann_version(home: Path) -> str | None:
    """The toolkit's version: `version=` of <arch>-linux/ascend_toolkit_install.info, else the
    running version in version.cfg (`runtime_running_version=[7.6.0.1.220:8.0.0]`)."""
    for info in sorted(home.glob("*-linux/ascend_toolkit_install.info")):
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("version="):
                return line.split("=", 1)[1].strip()
    cfg = home / "version.cfg"
    if cfg.is_file():
        found = re.search(r"running_version=\[[^:\]]*:([^\]]+)\]", cfg.read_text(errors="replace"))
        if found:
            return found.group(1)
    return None


def check_atc(facts: dict) -> Check:
    from npueval.build.atc import find_atc

    found = find_atc()
    if found is None:
        return Check("atc", INFO, "not found (only `npueval build` needs it, to compile the OM)",
                     "source CANN's set_env.sh, or compile elsewhere with the build folder's atc.sh")
    argv, where = found
    exe = Path(shutil.which(argv[0]) or argv[0]).resolve() if argv[0] != "bash" else None
    version = cann_version(exe.parent.parent) if exe is not None else facts.get("cann_version")
    return Check("atc", OK, f"{where}, CANN {version or facts.get('cann_version') or 'version unknown'}")


def check_ais_bench(facts: dict) -> Check:
    from npueval.actors.om_backend import api_generation

    try:
        importlib.import_module("aclruntime")
        interface = importlib.import_module("ais_bench.infer.interface")
        session_class = interface.InferSession
    except Exception as exc:
        from npueval.core.errors import root_cause

        return Check("ais_bench", FAIL, f"cannot import ais_bench and aclruntime ({root_cause(exc)})",
                     "install the vendor wheels (docs/npu-hosts.md, \"ais_bench and aclruntime\"), in this Python")
    api = api_generation(session_class)
    facts["ais_bench_api"] = api
    if api == "pipeline":
        return Check("ais_bench", OK, "aclruntime and ais_bench import; API 2024 on (infer_pipeline)")
    return Check("ais_bench", WARN, "aclruntime and ais_bench import; API pre-2024 (no infer_pipeline): one infer "
                 "call per model batch", "build the current ais_bench from Ascend/tools for the pipeline")


def check_acl(facts: dict) -> Check:
    try:
        acl = importlib.import_module("acl")
        count, ret = acl.rt.get_device_count()
        soc = acl.get_soc_name()
    except Exception as exc:
        from npueval.core.errors import root_cause

        return Check("pyACL", INFO if isinstance(exc, ImportError) else WARN,
                     f"`import acl` failed ({root_cause(exc)}): Ray counts NPUs by /dev/davinci* then, "
                     "and cannot name their type", "source CANN's set_env.sh (it puts pyACL on PYTHONPATH)")
    if ret != 0:
        return Check("pyACL", WARN, f"acl.rt.get_device_count() returned error {ret}", "check the driver and CANN")
    facts["acl_devices"] = count
    return Check("pyACL", OK, f"{count} device(s) visible to ACL, {soc}")


def check_ray(facts: dict) -> Check:
    import ray
    from ray._private.accelerators.npu import NPUAcceleratorManager

    from npueval.cluster.visibility import NOSET_ENV, VISIBLE_ENV, check_user_list, noset, parse_visible

    count = NPUAcceleratorManager.get_current_node_num_accelerators()
    visible = parse_visible(os.environ.get(VISIBLE_ENV))
    if visible is not None:
        count = min(count, len(visible))
    facts["ray_npus"] = count
    env = f"{VISIBLE_ENV}={os.environ[VISIBLE_ENV]!r}" if VISIBLE_ENV in os.environ else f"{VISIBLE_ENV} not set"
    found = (f"Ray {ray.__version__} would see {count} NPU(s) on this node; {env}; {NOSET_ENV} "
             f"{'set: each actor opens its own id among the visible chips' if noset() else 'not set'}")
    from npueval.core.errors import UserError

    try:
        check_user_list()
    except UserError as exc:
        return Check("Ray", FAIL, f"{found}; {exc}", f"fix {VISIBLE_ENV}")
    if count == 0 and facts.get("npu_smi_found"):
        return Check("Ray", FAIL, found, "Ray finds NPUs through pyACL (source set_env.sh) or /dev/davinci*; "
                     "on a cluster started by hand, `ray start` needs the same environment")
    return Check("Ray", OK if count else INFO, found)


def check_temp_folder(facts: dict) -> Check:
    from npueval.actors.node_files import check_model_folder, local_root, own_folder
    from npueval.cluster.ray_cluster import temp_dir_problem
    from npueval.core.errors import UserError

    ray_problem = temp_dir_problem()  # any backend's, unlike ais_bench's paths below
    if ray_problem is not None:
        facts.setdefault("stops_every_run", set()).add("temp folder")
        return Check("temp folder", FAIL, *ray_problem)
    root = local_root()
    try:
        check_model_folder(root)
        own_folder(root)
    except UserError as exc:
        return Check("temp folder", FAIL, str(exc), "set TMPDIR to a folder of yours whose path has only "
                     "A-Z a-z 0-9 _ - / .")
    probe = root / f".doctor-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return Check("temp folder", FAIL, f"cannot write in {root} ({exc.strerror or exc})", "set TMPDIR to a "
                     "writable folder")
    return Check("temp folder", OK, f"{root}: writable, a path ais_bench takes (models are copied there)")


def check_python(facts: dict) -> Check:
    return Check("Python", OK, f"{sys.version.split()[0]} at {sys.executable}")


CHECKS: list[tuple[str, Callable[[dict], Check]]] = [
    ("Python", check_python), ("npu-smi", check_npu_smi), ("CANN", check_cann), ("atc", check_atc), ("ais_bench",
                                                                                                     check_ais_bench),
    ("pyACL", check_acl), ("Ray", check_ray), ("temp folder", check_temp_folder),
]


def render(report: Report) -> str:
    """One line per check (a second for its fix), then what `npueval run` does here."""
    name_w = max(len(c.name) for c in report.checks)
    verdict_w = max(len(c.verdict) for c in report.checks)
    lines = []
    for c in report.checks:
        lines.append(f"{c.name:<{name_w}}  {c.verdict:<{verdict_w}}  {c.found}")
        if c.fix:
            lines.append(f"{'':<{name_w + verdict_w + 4}}fix: {c.fix}")
    state = ("om ready" if report.om_ready else "no local Ray" if report.backend == "none" else
             "om cannot start" if report.npu_host else "no NPU")
    lines.append(f"\nnpueval run here: {report.backend} ({state}): {report.why}")
    return "\n".join(lines)
