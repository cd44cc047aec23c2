"""``vfmkd submit`` against a real local Ray head (127.0.0.1, dashboard job server, token auth)."""

import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import files_holding, tiny_overrides
from tests.local_cluster import RAY, free_port, stop_node
from vfmkd_ray.cli import main
from vfmkd_ray.submission import client

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_head():
    """A head of its own (own ports, own temp dir), stopped by signal: `ray stop` would also stop
    any other local Ray on the machine."""
    dashboard = free_port()
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # socket paths must stay short
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard,
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    args = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            "--num-cpus=4", "--num-gpus=0", "--disable-usage-stats", f"--temp-dir={temp}"]  # fmt: skip
    # As on a cluster node, `python` is the environment Ray runs in (here: this virtualenv).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    head = subprocess.Popen(
        args + [f"{flag}={port}" for flag, port in ports.items()],
        env={**os.environ, "PATH": path},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while True:
        try:
            client(address).list_jobs()
            break
        except Exception:
            if time.monotonic() > deadline or head.poll() is not None:
                stop_node(head)
                pytest.fail(f"the Ray head at {address} did not come up")
            time.sleep(2)
    yield address, Path(temp)
    stop_node(head)


def test_demo_job_succeeds_and_a_failing_job_is_reported(ray_head, tmp_path, capsys, monkeypatch):
    address, head_temp = ray_head
    # Forwarded by name into the job's runtime env, as S3 settings are on a real cluster; the key
    # is not (Ray would log it): the cluster's nodes hold their own.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    secret = f"never-print-{uuid.uuid4().hex}"  # made here: the uploaded test sources cannot hold it
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    overrides = tiny_overrides(tmp_path)
    assert main(["submit", "--address", address, "demo", *overrides]) == 0
    out = capsys.readouterr().out
    env_line = out.split("(env: ", 1)[1].split(")", 1)[0]
    assert "=== vfmkd demo summary ===" in out and "AWS_DEFAULT_REGION" in env_line
    assert secret not in out and "AWS_SECRET_ACCESS_KEY" not in env_line
    job_id = out.split("submitted ", 1)[1].split(":", 1)[0]
    assert f"job {job_id}: SUCCEEDED" in out.splitlines()[-1]

    assert main(["jobs", "status", job_id, "--address", address]) == 0
    assert f"{job_id}: SUCCEEDED" in capsys.readouterr().out
    assert main(["jobs", "logs", job_id, "--address", address]) == 0
    logs = capsys.readouterr().out
    # The job's log holds the lines a person sees at a terminal: rank 0's epochs, not Ray's tables.
    assert "=== vfmkd demo summary ===" in logs and "[vfmkd] epoch 2/2  train loss" in logs
    assert "(RayTrainWorker" not in logs and "Execution plan" not in logs

    missing = [*overrides, f"store.root={tmp_path}/no-store", "name=missing-store"]
    assert main(["submit", "--address", address, "train", "configs/demo.yaml", *missing]) == 1
    failed = capsys.readouterr().out
    assert "FAILED" in failed and "no feature store for teacher 'sam'" in failed
    leaks = files_holding(head_temp, [secret])
    assert any(head_temp.rglob("runtime_env*.log")) and not leaks, f"the secret is in {leaks}"
