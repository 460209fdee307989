"""A Ray that npueval starts listens on 127.0.0.1 only (its dashboard agent too) and sends no usage
reports, even where the environment does not ask for it (the tests' conftest does: here a child
process starts without those variables). Sockets are read from /proc, not from Ray's own word."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from npueval.cluster.ray_cluster import LOOPBACK_ENV, connect, disconnect
    session = connect(simulated_npus=2)
    import ray

    @ray.remote(resources={"NPU": 1})
    class Probe:
        def pid(self):
            return os.getpid()

    probe = Probe.remote()
    ray.get(probe.pid.remote())  # a worker is up too
    print(json.dumps({"pid": os.getpid(), "loopback_env_after": os.environ.get(LOOPBACK_ENV)}), flush=True)
    sys.stdin.readline()  # the test reads the sockets now
    disconnect(session)
""")


def descendants(pid: int) -> set[int]:
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        children = [c for c, pp in parent.items() if pp == p and c not in found]
        found.update(children)
        frontier.extend(children)
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in (Path("/proc") / str(pid) / "fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def listening() -> dict[str, str]:
    """inode → local address of every TCP socket in LISTEN state (IPv4 and IPv6)."""
    found = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_ip = fields[1].split(":")[0]
            raw = bytes.fromhex(hex_ip)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found[fields[9]] = str(ipaddress.ip_address(raw) if width == 8 else ipaddress.IPv6Address(raw))
    return found


def test_a_ray_npueval_starts_listens_on_loopback_only_and_reports_nothing():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED", "RAY_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline() or "{}")
        assert info, proc.stderr.read() if proc.poll() is not None else "no answer"
        processes = descendants(info["pid"])
        sockets = listening()
        addresses = {(pid, sockets[i]) for pid in processes for i in socket_inodes(pid) if i in sockets}
        names = {pid: (Path("/proc") / str(pid) / "comm").read_text().strip() for pid, _ in addresses}
        assert len({pid for pid, _ in addresses}) >= 4  # driver, GCS, raylet, agents, the worker
        assert {"gcs_server", "raylet"} <= set(names.values())
        for pid, address in addresses:
            ip = ipaddress.ip_address(address)
            loopback = ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped
                                          and ip.ipv4_mapped.is_loopback)
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_text().replace("\0", " ")[:300]
            assert loopback, f"{names[pid]} (pid {pid}) listens on {address}: {cmdline}"
        assert info["loopback_env_after"] is None  # the guard was only for the start
        gcs = next(pid for pid, name in names.items() if name == "gcs_server")
        environ = (Path("/proc") / str(gcs) / "environ").read_bytes().split(b"\0")
        assert b"RAY_USAGE_STATS_ENABLED=0" in environ
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0, proc.stderr
