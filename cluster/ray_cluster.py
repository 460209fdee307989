"""Start or join Ray, and check that it has the devices a run asks for (docs/design.md, "Ray").

- `--address HOST:PORT|auto` joins that cluster; without it, RAY_ADDRESS (which
  `ray job submit` sets) is used; otherwise npueval starts a local Ray that listens on
  127.0.0.1 only (its dashboard too) and sends no usage reports.
- When npueval starts Ray on an NPU host, only the healthy chips' logic ids are made visible
  to it (ASCEND_RT_VISIBLE_DEVICES at Ray's start, ascending), so no actor lands on a sick one.
  A list the user set before is narrowed to its healthy chips, never replaced (cluster/visibility.py).
- Ray lets an unmet resource request wait forever (a request Ray cannot meet stays pending); `require` fails at once
  with what the cluster has instead.
- Ray's join of an address where no GCS answers takes about 15 minutes (`check_reachable`), and a local Ray in a
  temp folder it cannot use fails deep inside Ray (`temp_dir_problem`): both are refused first, in one line that
  names the address or the folder.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

from npueval.core.errors import RunError, UserError, first_line, root_cause
from npueval.core.signals import sigterm_kept

from .devices import Device
from .visibility import VISIBLE_ENV, check_user_list, narrowed

log = logging.getLogger(__name__)

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@dataclass(frozen=True)
class RaySession:
    address: str  # what was joined, or "local"
    started_here: bool  # npueval started this Ray (it stops with the driver)
    resources: dict  # the cluster's total resources when connected
    connected_here: bool = True  # False: this process was already connected (tests, embedding)


#: Ray deletes objects nobody holds in batches, once a second by default; blocks go through the
#: store at up to ~100 a second, so a second's worth of finished blocks (50 MiB and more) stayed in
#: it. Every 100 ms halves the store's high-water mark (BENCHMARKS.md, "Scale"). A cluster started
#: with `ray start` takes the same setting from RAY_free_objects_period_milliseconds=100.
FREE_OBJECTS_PERIOD_MS = 100

#: How long `connect` waits for the cluster it joins to answer (--connect-timeout).
CONNECT_TIMEOUT_S = 30.0


def connect(address: str | None = None, *, num_cpus: int | None = None, simulated_npus: int | None = None,
            devices: list[Device] | None = None, allow_unhealthy: bool = False,
            connect_timeout: float = CONNECT_TIMEOUT_S) -> RaySession:
    """Join `address` (or RAY_ADDRESS), else start a local Ray on 127.0.0.1.

    `simulated_npus` declares an "NPU" custom resource on a local Ray (simulated backend);
    `devices` are this host's chips, of which the healthy ones are made visible to a local Ray;
    `connect_timeout`: seconds the cluster joined has to answer.
    """
    import ray

    # Without the acl module Ray logs a harmless traceback while it looks for NPUs.
    logging.getLogger("ray._private.accelerators.npu").setLevel(logging.CRITICAL)
    from_env = not address
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return RaySession(address or "local", False, dict(ray.cluster_resources()), connected_here=False)
    if address:
        if simulated_npus:
            raise UserError("--devices with the simulated backend needs a Ray npueval starts; drop --address")
        # Which of the two the address came from: RAY_ADDRESS may be set without the user knowing it.
        named, local = ((f"RAY_ADDRESS={address} (set in the environment)", "; or unset RAY_ADDRESS for a local Ray")
                        if from_env else (f"--address {address}", "; or drop --address for a local Ray"))
        check_reachable(address, named, local, connect_timeout)
        try:
            with sigterm_kept():
                ray.init(address=address, log_to_driver=False)
        except Exception as exc:
            raise UserError(f"{named}: cannot join that Ray cluster ({root_cause(exc)}); check the address"
                            f"{local}") from None
        return RaySession(address, False, dict(ray.cluster_resources()))

    problem = temp_dir_problem()
    if problem is not None:
        raise UserError(f"{problem[0]}; {problem[1]}")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    resources = {}
    if simulated_npus:
        resources["NPU"] = float(simulated_npus)
    visible = None
    if devices and not simulated_npus:
        check_user_list()
        visible = visible_devices(devices, allow_unhealthy)
    with _loopback_only(), _environ(VISIBLE_ENV, visible), _starting_ray(), sigterm_kept():
        ray.init(
            # "local": a Ray of our own, even where one that `ray start` left running would be found.
            address="local",
            num_cpus=num_cpus,
            resources=resources or None,
            include_dashboard=False,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
            # Ray would also start an idle worker per CPU for the first driver; the device actors
            # start their own processes anyway, and on a 2-core host those idle ones took about a
            # second of Ray's start (BENCHMARKS.md, "`npueval run` on eval sets of real size").
            _system_config={"free_objects_period_milliseconds": FREE_OBJECTS_PERIOD_MS,
                            "prestart_worker_first_driver": False, **_worker_niceness(simulated_npus, devices)},
        )
    return RaySession("local", True, dict(ray.cluster_resources()))


#: What a joining driver asks of the GCS, in a process of its own: the GcsClient that ray.init builds.
_GCS_PROBE = """
import sys
sys.path[:] = [p for p in sys.path if p]  # not a folder named ray in the current one
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1])
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
"""


def check_reachable(address: str, named: str, local: str, timeout: float) -> None:
    """Refuse, in one line naming `named` (the flag or variable, with the address), an address
    where no Ray GCS answers within `timeout` seconds.

    Ray 2.60's ray.init(address=...) tries its GcsClient NUM_REDIS_GET_RETRIES (20) times, each try
    waiting gcs_rpc_server_connect_timeout_s (5 s) for the GCS channel, 5 s more for its pubsub
    channel, then py_gcs_connect_timeout_s (30 s) for the cluster id: about 15 minutes, with Ray's
    C++ warnings the only output. So first: the address's form, its host, and a TCP connection
    (which tell refused, unreachable and unresolvable apart at once), then Ray's own GcsClient
    bounded by Ray's own knobs: those two are C++ settings read from the environment when Ray is
    imported, so the client runs in a process of its own, where they hold for it alone and its
    warnings are kept off the user's terminal (they are logged at DEBUG)."""
    import socket

    deadline = time.monotonic() + timeout
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address_or_die

        try:
            address = canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as exc:
            raise UserError(f"{named}: {first_line(exc).rstrip('.')}{local}") from None
        named = f"{named} (found {address})"
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:6379
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536) or any(c in host for c in "/ []"):
        raise UserError(f"{named}: not HOST:PORT; give the head's address as `ray start --head` printed it "
                        f"(e.g. 10.0.0.5:6379), or auto for the cluster `ray start` runs on this host{local}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except socket.gaierror as exc:
        raise UserError(f"{named}: the host {host} does not resolve ({exc.strerror}); check the name, or give the "
                        f"head's IP address{local}") from None
    except ConnectionRefusedError:
        raise UserError(f"{named}: nothing listens there (connection refused); start the cluster there "
                        f"(`ray start --head`), or give the port it printed (6379 by default){local}") from None
    except TimeoutError:
        raise UserError(f"{named}: no answer within {timeout:g} s; check that the host is up and lets this one "
                        f"reach the port, or wait longer with --connect-timeout SECONDS{local}") from None
    except OSError as exc:
        raise UserError(f"{named}: cannot reach it ({exc.strerror or exc}){local}") from None
    left = max(deadline - time.monotonic(), 1.0)
    env = {**os.environ, "RAY_py_gcs_connect_timeout_s": str(math.ceil(left)),
           "RAY_gcs_rpc_server_connect_timeout_s": "0"}  # a GCS that answers is not kept waiting by it
    try:
        # The client gives up after `left` seconds by itself; this process's bound only catches an import that hangs.
        done = subprocess.run([sys.executable, "-c", _GCS_PROBE, address], env=env, capture_output=True, text=True,
                              timeout=left + 30)
        error, noise = done.stdout.strip() if done.returncode else "", done.stderr
    except subprocess.TimeoutExpired as exc:
        error, noise = "TimedOut", exc.stderr or ""
    if noise:
        log.debug("Ray's GcsClient on %s: %s", address, noise)
    if "Timed" in error:
        raise UserError(f"{named}: something listens there, but no Ray GCS answered within {timeout:g} s; give "
                        "the head's GCS port (6379 unless `ray start --head --port` said otherwise), or wait longer "
                        f"with --connect-timeout SECONDS{local}")
    if error:
        raise UserError(f"{named}: cannot join that Ray cluster ({error.splitlines()[-1]}); check the address{local}")


#: Linux's limit on a Unix socket's path (108 bytes with the terminating NUL), which Ray checks.
UNIX_SOCKET_PATH_MAX = 107


def temp_dir_problem() -> tuple[str, str] | None:
    """What stops a local Ray in the folder it takes for its session, as (what, the fix), or None.

    Ray takes $RAY_TMPDIR, else $TMPDIR, else /tmp (ray/_common/utils.py), and its session folder
    in `ray/` there holds the Unix sockets of the object store and the raylet:
    - Ray 2.60's CoreWorker (_raylet.pyx) encodes those two socket paths as ASCII, so a folder whose
      path is not ASCII starts Ray's own processes and then fails the driver and every worker with
      UnicodeEncodeError. It is refused rather than replaced by an ASCII folder of npueval's choosing:
      that folder would also get Ray's logs and the objects it spills (gigabytes, on a /tmp that may be
      why TMPDIR was moved), and could be removed only after every Ray process has let go of it, never
      after a crash; and the same path fails ais_bench's model copies (actors/node_files.py) anyway.
    - A Unix socket path has at most 107 bytes; Ray checks that only once it has made the session folder.
      The folder's name holds the pid of the process that starts Ray: counted at its longest, so
      that the verdict does not change from one run (and `npueval doctor`) to the next.
    """
    from ray._common.utils import get_default_system_temp_dir

    folder = get_default_system_temp_dir()
    name = "RAY_TMPDIR" if "RAY_TMPDIR" in os.environ else "TMPDIR" if folder == os.environ.get("TMPDIR") else None
    if name is None:  # Ray's own /tmp
        return None
    named = f"{name}={folder}"
    if not folder.isascii():
        return (f"{named}: a local Ray cannot start in a folder whose path is not ASCII (Ray encodes the paths of "
                "its sockets there as ASCII)", f"set {name} to a folder whose path is ASCII, e.g. {name}=/tmp")
    # The longest socket path Ray makes: ray/session_<%Y-%m-%d_%H-%M-%S_%f>_<pid, at most 4194304>/sockets/plasma_store
    socket_path = os.path.join(folder, "ray", f"session_{'0' * 26}_{'0' * 7}", "sockets", "plasma_store")
    over = len(socket_path.encode()) - UNIX_SOCKET_PATH_MAX
    if over > 0:
        return (f"{named}: a local Ray cannot start there: the paths of its sockets would be {over} bytes over the "
                f"{UNIX_SOCKET_PATH_MAX} a Unix socket's path may have",
                f"set {name} to a folder of at most {len(folder.encode()) - over} bytes, e.g. {name}=/tmp")
    return None


def _worker_niceness(simulated_npus: int | None, devices: list[Device] | None) -> dict:
    """Ray starts its workers at nice 15, below its own processes. Where the workers drive NPUs
    (or stand in for them) they are the devices, and they wait on the chip rather than compute:
    at 15, on two cores, the first one took 1.8 s to come up behind the driver's shard check and
    Ray's agents, 0.7–0.9 s at 0, with the same steady state. CPU workers (the onnx backend)
    compute on the host and keep Ray's 15, so that the driver stays ahead of them (BENCHMARKS.md,
    "`npueval run` on eval sets of real size")."""
    return {"worker_niceness": 0} if simulated_npus or devices else {}


@contextmanager
def _starting_ray():
    """A local Ray that cannot start is one line that says why, not Ray's traceback."""
    try:
        yield
    except Exception as exc:
        hint = "; set TMPDIR to a shorter folder (Ray puts its sockets there)" if "path length" in str(exc) else ""
        raise RunError(f"a local Ray could not start: {root_cause(exc)}{hint}") from None


@contextmanager
def _environ(name: str, value: str | None):
    """`name` set to `value` (unless None) while Ray starts and reads it; as it was afterwards."""
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextmanager
def _loopback_only():
    """Every process of the Ray being started listens on 127.0.0.1 only.

    Measured (tests/integration/test_security.py): with address="local", Ray 2.60 ignores
    _node_ip_address and takes the machine's address as the node's, and then the GCS, the raylet,
    the workers and the dashboard agent listen on all interfaces. What makes Ray use loopback is
    its "no clusters" switch, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which Ray reads into
    ray_constants when it is imported (so the constant is set too, for a Ray already imported)
    and its child processes read from the environment. The switch also stops a Ray from joining
    other hosts, so it holds only while this local Ray starts; the same process may join a
    cluster afterwards.
    """
    from ray._private import ray_constants

    old_env, old_flag = os.environ.get(LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            del os.environ[LOOPBACK_ENV]
        else:
            os.environ[LOOPBACK_ENV] = old_env


def visible_devices(devices: list[Device], allow_unhealthy: bool = False) -> str:
    """ASCEND_RT_VISIBLE_DEVICES for a Ray npueval starts: the healthy chips' logic ids, ascending,
    within the list the user set (if any)."""
    allowed = set(narrowed(d.logic_id for d in devices))
    for d in devices:
        if d.logic_id in allowed and not (d.healthy or allow_unhealthy):
            log.warning("leaving out NPU logic id %d (card %d chip %d): health %s", d.logic_id, d.card, d.chip,
                        d.health)
    chosen = [d.logic_id for d in devices if d.logic_id in allowed and (d.healthy or allow_unhealthy)]
    if not chosen:
        user = os.environ.get(VISIBLE_ENV)
        log.warning("no NPU left to run on: npu-smi shows %s%s (--allow-unhealthy runs on sick chips too)",
                    ", ".join(f"logic id {d.logic_id} {d.health}" for d in devices),
                    f", and {VISIBLE_ENV}={user!r} allows only logic ids {sorted(allowed)}" if user is not None else "")
    return ",".join(map(str, sorted(chosen)))


#: Memory one simulated device takes on a local Ray: its worker process measured 130 MB resident,
#: 73 MB proportional (PSS), on this project's machines (RELIABILITY.md, "Bad input").
SIMULATED_DEVICE_BYTES = 100 << 20


def check_room_for_simulated(count: int) -> None:
    """Refuse more simulated devices than this host's available memory holds: each is a process
    of a Ray npueval starts here, and past that the host swaps and crawls instead of failing."""
    available = available_memory()
    room = available // SIMULATED_DEVICE_BYTES if available is not None else None
    if room is not None and count > room:
        raise UserError(f"--devices {count}: each simulated device is a process of about "
                        f"{SIMULATED_DEVICE_BYTES >> 20} MB on this host, which has {available / 2**30:.1f} GiB of "
                        f"memory available, room for {room}; ask for fewer (a real NPU host has 8 or 16 chips)")


def available_memory() -> int | None:
    """Bytes of memory available to new processes (Linux's MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require(resources: dict, wanted: dict[str, float]) -> None:
    """Fail now, naming what the cluster has, if it cannot meet `wanted` (e.g. {"NPU": 8})."""
    short = {k: v for k, v in wanted.items() if resources.get(k, 0) < v}
    if short:
        has = ", ".join(f"{k} {resources.get(k, 0):g}" for k in sorted(wanted))
        asked = ", ".join(f"{k} {v:g}" for k, v in sorted(wanted.items()))
        raise UserError(
            f"--devices: the run asks for {asked} but the Ray cluster has {has}; "
            "ask for fewer devices, or join a cluster that has them (--address)"
        )


def disconnect(session: RaySession) -> None:
    """Disconnect this driver: a Ray npueval started stops with it, a joined cluster runs on, and
    a connection this process already had before `connect` is left as it was."""
    import gc

    import ray

    if session.connected_here and ray.is_initialized():
        if session.started_here:
            _stop_autoscaler_monitor()
        # Object refs in cyclic garbage (a lost node's errors hold frames that hold refs) are freed
        # now, while Ray is up: freed by a collection that runs during or after the shutdown, a
        # ref's release reaches the gone core worker, which ends the process ("The core worker has
        # already been shutdown … The process will exit", exit 1).
        gc.collect()
        ray.shutdown()


def _stop_autoscaler_monitor() -> None:
    """Ray's shutdown stops the head's processes one by one, the GCS before the autoscaler's
    monitor, which then spends the whole of its one-second grace trying to tell the gone GCS that
    it was terminated: 1.0 of the 1.4 s of a local Ray's stop (BENCHMARKS.md, "`npueval run` on
    eval sets of real size"). A Ray npueval started has nothing to autoscale: its monitor is
    killed first."""
    from ray._private import worker

    node = worker._global_node
    if node is not None:
        node.kill_monitor(check_alive=False)
