"""A real MLflow tracking server for tests: ``mlflow server`` on 127.0.0.1, on a free port, with
a SQLite backend and proxied artifacts in a temporary folder."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.local_cluster import free_port

STARTUP_S = 120.0  # measured 17 s on a 2-core VM: it migrates a fresh database first


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    port = free_port()
    log = open(folder / "mlflow-server.log", "wb")  # noqa: SIM115 (open for the server's whole life)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(uri, process, folder)
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _wait_for_health(uri: str, process: subprocess.Popen, folder: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (folder / "mlflow-server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mlflow server exited with code {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer {uri}/health within {STARTUP_S}s")
