"""A Ray cluster of real nodes on 127.0.0.1 for tests: a head and worker nodes, each a ``ray start
--block`` process in its own session, with its own ports and temp dir, so a test can kill one node
(SIGKILL to its process group: raylet and workers, as a lost machine) and start another. Stopped by
signal: ``ray stop`` would stop every other local Ray on the machine too."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: list[str]) -> subprocess.Popen:
    # As on a cluster node, `python` is the environment Ray runs in (here: this virtualenv).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.Popen(
        [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args],
        # A driver reads RAY_AUTH_MODE when it imports Ray (long before a test starts a cluster), so
        # the nodes run without token authentication: they listen on 127.0.0.1 only.
        env={**os.environ, "PATH": path, "RAY_AUTH_MODE": "disabled"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_head(num_cpus: int, dashboard: bool = False) -> tuple[subprocess.Popen, str, int | None, Path]:
    """A head node; returns its process, GCS address, dashboard port (or None) and temp dir."""
    temp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # socket paths must stay short
    gcs, dashboard_port = free_port(), free_port() if dashboard else None
    ports = {
        "--port": gcs,
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    extra = ["--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"] if dashboard else []
    args = ["--head", f"--num-cpus={num_cpus}", "--num-gpus=0", f"--temp-dir={temp}", *extra]
    head = _start(args + [f"{flag}={port}" for flag, port in ports.items()])
    deadline = time.monotonic() + 120
    while True:  # until the GCS accepts connections
        try:
            socket.create_connection(("127.0.0.1", gcs), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or head.poll() is not None:
                stop_node(head)
                raise RuntimeError(f"the Ray head on 127.0.0.1:{gcs} did not come up") from None
            time.sleep(1)
    return head, f"127.0.0.1:{gcs}", dashboard_port, temp


def start_worker(address: str, num_cpus: int) -> subprocess.Popen:
    ports = {
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    return _start(
        [f"--address={address}", f"--num-cpus={num_cpus}", "--num-gpus=0"]
        + [f"{flag}={port}" for flag, port in ports.items()]
    )


def kill_node(node: subprocess.Popen) -> None:
    """SIGKILL to the node's process group and every process it started, at once: no drain, no
    goodbye to the head. (Ray's workers are the raylet's children but not all in its group; left
    alone they outlive it by seconds and go on training.)"""
    doomed = _descendants(node.pid)
    os.killpg(node.pid, signal.SIGKILL)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    node.wait(timeout=30)


def process_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first, then ppid; start time
    at index 19), or None when the process is gone. The name may hold spaces and parentheses."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _descendants(root: int) -> list[int]:
    """Every process below ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        if (stat := process_stat(int(entry.name))) is not None:
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    found, frontier = [], [root]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def stop_node(node: subprocess.Popen) -> None:
    """Ends a node once a test is done with it, as ``kill_node`` does: on SIGTERM ``ray start
    --block`` drains for longer than 10 s (each stop cost a test 10 s), and a test's node has no
    work to drain. A launcher that already exited may leave its raylet and GCS in its group."""
    if node.poll() is None:
        kill_node(node)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)


def wait_for_nodes(count: int, timeout_s: float = 120) -> None:
    import ray

    deadline = time.monotonic() + timeout_s
    while len([n for n in ray.nodes() if n.get("Alive")]) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cluster did not reach {count} nodes in {timeout_s:.0f}s")
        time.sleep(1)
