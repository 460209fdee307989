"""What keeps npueval from joining or starting a Ray is one line, exit 2, in bounded time.

Each case runs the CLI as a user does, in a process of its own with a timeout, so that a join
that hangs (Ray 2.60 retries an address where no GCS answers for about 15 minutes) fails the test
instead of hanging the suite; and Ray's C++ warnings ("Failed to connect to GCS …") stay out of
what the user sees.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

RAY_NOISE = ("Failed to connect to GCS", "rpc_client", "gcs_client", "Traceback")


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """A bare `npueval run` prepares the bundled sample before it joins: into a cache of this
    module's, so that tests/integration/test_sample.py still finds the session's cache empty."""
    old = os.environ.get("NPUEVAL_CACHE_DIR")
    os.environ["NPUEVAL_CACHE_DIR"] = str(tmp_path_factory.mktemp("refusals-cache"))
    yield
    if old is None:
        del os.environ["NPUEVAL_CACHE_DIR"]
    else:
        os.environ["NPUEVAL_CACHE_DIR"] = old


def npueval(*args: str, timeout: float = 60, **env: str):
    """(exit code, the one line of stderr that is not a log line, seconds taken)."""
    environ = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "npueval.eval", *args], env={**environ, **env},
                          capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - start
    assert not any(noise in done.stderr for noise in RAY_NOISE), done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith(("INFO ", "DEBUG "))]
    assert len(lines) == 1, done.stderr
    return done.returncode, lines[0], took


@pytest.fixture
def free_port():
    """A port of 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def not_ray():
    """A plain TCP server on 127.0.0.1 that accepts connections and never answers: not a Ray GCS."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


def test_an_address_where_nothing_listens_is_one_line_at_once(free_port):
    code, line, took = npueval("run", "--address", f"127.0.0.1:{free_port}")
    assert code == 2 and took < 30
    assert line == (f"npueval run: error: --address 127.0.0.1:{free_port}: nothing listens there (connection "
                    "refused); start the cluster there (`ray start --head`), or give the port it printed (6379 by "
                    "default); or drop --address for a local Ray")


def test_ray_address_is_named_as_the_source(free_port):
    """`ray job submit` sets RAY_ADDRESS: a user may not know that it is set."""
    code, line, took = npueval("run", RAY_ADDRESS=f"127.0.0.1:{free_port}")
    assert code == 2 and took < 30
    assert line.startswith(f"npueval run: error: RAY_ADDRESS=127.0.0.1:{free_port} (set in the environment): "
                           "nothing listens there")
    assert line.endswith("; or unset RAY_ADDRESS for a local Ray")


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:99999", "ray://127.0.0.1:10001"])
def test_an_address_that_is_not_host_port(address):
    code, line, _ = npueval("bench", "--backend", "simulated", RAY_ADDRESS=address)
    assert code == 2
    assert line.startswith(f"npueval bench: error: RAY_ADDRESS={address} (set in the environment): not HOST:PORT; "
                           "give the head's address as `ray start --head` printed it")


def test_a_host_that_does_not_resolve():
    code, line, took = npueval("run", "--address", "no-such-host.invalid:6379")  # .invalid never resolves (RFC 6761)
    assert code == 2 and took < 30
    assert line.startswith("npueval run: error: --address no-such-host.invalid:6379: the host no-such-host.invalid "
                           "does not resolve (")


def test_a_port_where_something_else_listens_waits_connect_timeout_only(not_ray):
    code, line, took = npueval("run", "--address", not_ray, "--connect-timeout", "3")
    assert code == 2 and 3 <= took < 25
    assert line == (f"npueval run: error: --address {not_ray}: something listens there, but no Ray GCS answered "
                    "within 3 s; give the head's GCS port (6379 unless `ray start --head --port` said otherwise), or "
                    "wait longer with --connect-timeout SECONDS; or drop --address for a local Ray")


def test_connect_timeout_must_be_positive():
    code, line, _ = npueval("bench", "--backend", "simulated", "--connect-timeout", "0")
    assert code == 2 and line == "npueval bench: error: --connect-timeout 0: must be more than 0 seconds"


def test_a_cluster_that_answers_is_joined(ray_npu4):
    """The checks before the join let a real cluster through, quietly."""
    import ray

    address = ray.get_runtime_context().gcs_address
    done = subprocess.run([sys.executable, "-m", "npueval.eval", "bench", "--backend", "simulated", "--address",
                           address, "--devices", "1", "--batch-sizes", "1", "--seq-len", "8", "--loop", "2",
                           "--warmup", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not any(noise in done.stderr for noise in RAY_NOISE), done.stderr
    assert f"Connecting to existing Ray cluster at address: {address}" in done.stderr  # Ray's log of the join
    assert done.stdout.splitlines()[-1].split()[:3] == ["1", "1", "simulated"]  # batch, devices, backend


# -- the folder a local Ray takes: $RAY_TMPDIR, else $TMPDIR, else /tmp -------------------------

def test_run_refuses_a_tmpdir_whose_path_is_not_ascii(tmp_path):
    """Ray 2.60 encodes its socket paths there as ASCII: its own processes start, then the driver
    fails with UnicodeEncodeError. Refused before Ray starts, naming TMPDIR."""
    folder = tmp_path / "临时"
    folder.mkdir()
    code, line, _ = npueval("run", timeout=120, TMPDIR=str(folder))
    assert code == 2
    assert line == (f"npueval run: error: TMPDIR={folder}: a local Ray cannot start in a folder whose path is not "
                    "ASCII (Ray encodes the paths of its sockets there as ASCII); set TMPDIR to a folder whose path "
                    "is ASCII, e.g. TMPDIR=/tmp")
    assert not (folder / "ray").exists()  # Ray never started


def test_run_refuses_a_tmpdir_too_long_for_rays_sockets(tmp_path):
    folder = tmp_path / ("x" * 60)
    folder.mkdir()
    code, line, _ = npueval("run", timeout=120, TMPDIR=str(folder))
    over = len(str(folder)) + len("/ray/session_2026-12-07_20-49-45_077809_0000000/sockets/plasma_store") - 107
    assert code == 2
    assert line == (f"npueval run: error: TMPDIR={folder}: a local Ray cannot start there: the paths of its sockets "
                    f"would be {over} bytes over the 107 a Unix socket's path may have; set TMPDIR to a folder of at "
                    f"most {len(str(folder)) - over} bytes, e.g. TMPDIR=/tmp")
    assert not (folder / "ray").exists()


def test_the_longest_tmpdir_allowed_is_the_longest_ray_takes(monkeypatch):
    """The limit is Ray's own check, on the socket path of a session started by the longest pid."""
    from ray._private.utils import validate_socket_filepath

    from npueval.cluster.ray_cluster import UNIX_SOCKET_PATH_MAX, temp_dir_problem

    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    monkeypatch.setenv("TMPDIR", "/" + "x" * 80)
    longest = int(temp_dir_problem()[1].split("at most ")[1].split()[0])
    for length, ok in ((longest, True), (longest + 1, False)):
        folder = "/" + "x" * (length - 1)
        monkeypatch.setenv("TMPDIR", folder)
        assert (temp_dir_problem() is None) is ok
        sock = str(Path(folder) / "ray" / "session_2026-12-07_20-49-45_077809_4194304" / "sockets" / "plasma_store")
        if ok:
            validate_socket_filepath(sock)
        else:
            with pytest.raises(OSError, match=f"cannot exceed {UNIX_SOCKET_PATH_MAX} bytes"):
                validate_socket_filepath(sock)
