"""Storage that fails under a running command ends it with one line naming the URI and the cause
(exit code 2), and a relaunch once the cause is gone resumes from what was written: a disk filling
up under `vfmkd precompute` and under `vfmkd train` (a real small tmpfs, grown afterwards), and the
S3 endpoint (a moto server of this test's own) stopped in the middle of a training epoch."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from tests.conftest import build_store_in_process, tiny_overrides
from tests.s3_server import TEST_CREDENTIALS, create_bucket, running_moto
from tests.small_disk import grow, small_disk
from vfmkd_ray.config import load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.run_files import read_metrics_log
from vfmkd_ray.store.parts import list_parts, stored_image_ids
from vfmkd_ray.store.verify import verify_store
from vfmkd_ray.training.fault_injection import HOLD_ENV

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.yaml")
ENOSPC = r"\[Errno 28\] .*No space left on device"


def test_a_full_disk_under_precompute_names_the_part_and_a_relaunch_resumes(tmp_path):
    overrides = [*tiny_overrides(tmp_path), f"store.root={tmp_path}/small/store"]
    write_synthetic_coco(load_config(None, overrides).data)
    dataset = f"{tmp_path}/small/store/sam_vit_b/64"
    with small_disk(tmp_path / "small", "100k") as disk:  # two of the four ~40 KB parts fit
        code, last = _vfmkd("precompute", *overrides)
        assert code == 2, last
        assert re.fullmatch(
            rf"vfmkd precompute: error: cannot write {re.escape(dataset)}/part-\w+\.parquet: {ENOSPC}"
            r"( \(full log: \S+\))?",
            last,
        ), last
        kept = {part: Path(part).read_bytes() for part in list_parts(dataset)}
        assert kept, "no part was written before the disk was full"
        assert not [p for p in Path(dataset).iterdir() if ".tmp-" in p.name]

        grow(disk, "1m")
        code, last = _vfmkd("precompute", *overrides)
        assert code == 0, last
        assert all(Path(part).read_bytes() == data for part, data in kept.items()), "a written part changed"
        assert sorted(stored_image_ids(dataset)) == sorted(str(i) for i in range(1, 17))
        assert verify_store(dataset, sample=0, check_all=True).passed


def test_a_full_disk_under_training_names_the_file_and_a_relaunch_resumes(tmp_path):
    overrides = [
        *tiny_overrides(tmp_path),
        f"train.storage_path={tmp_path}/small/runs",
        "train.checkpoint_every_steps=0",  # epoch ends only: what the disk holds does not hang on speed
        "train.max_failures=0",
    ]
    build_store_in_process(load_config(None, overrides))
    run_dir = tmp_path / "small" / "runs" / "tiny"
    # Epoch 1 writes about 30 MiB (best backbone and model files, a 16 MB checkpoint); epoch 2's
    # first write, a best file or its checkpoint, finds the disk full.
    with small_disk(tmp_path / "small", "34m") as disk:
        code, last = _vfmkd("train", *overrides)
        assert code == 2, last
        assert re.fullmatch(
            rf"vfmkd train: error: (cannot write|checkpoint upload to) {re.escape(str(run_dir))}/\S+"
            rf".*: {ENOSPC}"
            r"( \(full log: \S+\))?",
            last,
        ), last
        before = read_metrics_log(str(run_dir))
        assert [record["epoch"] for record in before] == [1]

        grow(disk, "200m")
        code, last = _vfmkd("train", *overrides)
        assert code == 0, last
        after = read_metrics_log(str(run_dir))
        assert [record["epoch"] for record in after] == [1, 2]
        assert after[0] == before[0], "the relaunch did not resume from epoch 1's checkpoint"


def test_the_s3_endpoint_stopped_mid_epoch_is_one_line_naming_the_uri(tmp_path, monkeypatch):
    bucket = "vfmkd-dies-mid-epoch"
    hold = tmp_path / "hold"
    hold.mkdir()
    with _moto_server(monkeypatch) as (endpoint, server):
        create_bucket(endpoint, bucket)
        overrides = [
            *tiny_overrides(tmp_path),
            f"store.root=s3://{bucket}/store",
            f"train.storage_path=s3://{bucket}/runs",
            "train.checkpoint_every_steps=1",  # a checkpoint on S3 at step 1, where the group is held
        ]
        build_store_in_process(load_config(None, overrides))
        (hold / "1.1").touch()
        monkeypatch.setenv(HOLD_ENV, str(hold))
        with _started("train", *overrides) as process:
            _wait_until_held(hold / "1.1", process)
            server.terminate()
            server.wait(timeout=30)
            (hold / "1.1").unlink()  # the group goes on without its storage
            _, stderr = process.communicate(timeout=400)
    last = stderr.strip().splitlines()[-1]
    assert process.returncode == 2, stderr
    assert re.fullmatch(
        rf"vfmkd train: error: cannot (access|write) s3://{bucket}/\S+: .*Could not connect to .*"
        r"( \(full log: \S+\))?",
        last,
    ), last


def _vfmkd(command: str, *overrides: str) -> tuple[int, str]:
    """Runs ``vfmkd <command>`` on the demo config; its exit code and the last line it printed."""
    with _started(command, *overrides) as process:
        _, stderr = process.communicate(timeout=480)
    return process.returncode, (stderr.strip().splitlines() or [""])[-1]


@contextlib.contextmanager
def _started(command: str, *overrides: str) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [sys.executable, "-m", "vfmkd_ray.cli", command, DEMO, *overrides],
        cwd=REPO,
        start_new_session=True,  # its local Ray too: killed with it, whatever the test's outcome
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def _moto_server(monkeypatch) -> Iterator[tuple[str, subprocess.Popen]]:
    """An S3 server of this test's own (it stops it); this process and the commands it starts
    point at it."""
    with running_moto() as (endpoint, server):
        try:
            for name, value in (TEST_CREDENTIALS | {"AWS_ENDPOINT_URL": endpoint}).items():
                monkeypatch.setenv(name, value)
            fsspec.filesystem("s3").clear_instance_cache()  # an earlier test's client has another endpoint
            yield endpoint, server
        finally:
            fsspec.filesystem("s3").clear_instance_cache()


def _wait_until_held(marker: Path, process: subprocess.Popen, timeout_s: float = 400) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(Path(f"{marker}.held.rank{rank}").exists() for rank in (0, 1)):
        if process.poll() is not None:
            pytest.fail(f"training ended (code {process.returncode}) before step 1: {process.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"training was not held after step 1 within {timeout_s:.0f}s")
        time.sleep(0.5)
