"""A real HTTP S3 endpoint for tests: moto's server mode on 127.0.0.1, on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import boto3

from tests.local_cluster import free_port

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "vfmkd-test-key",
    "AWS_SECRET_ACCESS_KEY": "vfmkd-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _wait_for(port: int, process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server did not listen on 127.0.0.1:{port} within {timeout_s}s")


@contextmanager
def running_moto() -> Iterator[tuple[str, subprocess.Popen]]:
    """A moto S3 server on a free port of 127.0.0.1: its endpoint URL and process (a test may stop
    it early); terminated at the end."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(port, process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Starts the server, points this process's AWS environment at it, yields the endpoint URL."""
    saved = {name: os.environ.get(name) for name in (*TEST_CREDENTIALS, "AWS_ENDPOINT_URL")}
    try:
        with running_moto() as (endpoint, _):
            os.environ.update(TEST_CREDENTIALS | {"AWS_ENDPOINT_URL": endpoint})
            yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def dead_s3_filesystem():
    """pyarrow's S3 filesystem pointed at a port nothing listens on, one attempt per request: what
    Ray Train's storage calls meet when the endpoint is down."""
    import pyarrow.fs

    return pyarrow.fs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{free_port()}",
        scheme="http",
        access_key="x",
        secret_key="y",
        retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=1),
    )


def create_bucket(endpoint: str, name: str) -> None:
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
