"""A precompute interrupted part-way (Ctrl-C, then a hard kill of whatever is left) and run again
completes with no duplicate and no partial part; the interrupted command said what it kept."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from tests.conftest import tiny_overrides
from vfmkd_ray.config import load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.store.parts import list_parts, stored_image_ids
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.store.verify import verify_store

pytestmark = pytest.mark.ray
NUM_IMAGES = 48


def test_killed_precompute_resumes_without_duplicates(tmp_path):
    overrides = [
        *tiny_overrides(tmp_path),
        f"data.synthetic.num_images={NUM_IMAGES}",
        "data.synthetic.image_size=128",
        "teachers.sam.input_size=128",
        "store.rows_per_part=2",
        "store.teacher_batch_size=2",
    ]
    cfg = load_config(None, overrides)
    write_synthetic_coco(cfg.data)
    dataset = Path(cfg.store.root, "sam_vit_b", "128")
    process = subprocess.Popen(
        [sys.executable, "-m", "vfmkd_ray.cli", "precompute", "configs/demo.yaml", *overrides],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_parts(dataset, process)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        _, stderr = process.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever of the local Ray is left
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("vfmkd precompute: interrupted. Every finished part is kept (")
    assert f"parts in {dataset}); the same command resumes, skipping stored images." in last
    done_before = list_parts(str(dataset))
    assert 0 < len(done_before) < NUM_IMAGES // 2, "the kill did not land part-way"
    assert not (dataset / "_manifest.json").exists()

    ray.init(num_cpus=2, logging_level="ERROR")
    try:
        [summary] = run_precompute(cfg)
    finally:
        ray.shutdown()
    ids = stored_image_ids(str(dataset))
    assert sorted(ids) == sorted(str(i) for i in range(1, NUM_IMAGES + 1))
    assert summary.num_new == NUM_IMAGES - 2 * len(done_before)
    assert not [p for p in dataset.iterdir() if ".tmp-" in p.name]
    assert verify_store(str(dataset), sample=2).passed


def _wait_for_parts(dataset: Path, process: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"precompute ended (code {process.returncode}) before it could be killed")
        if dataset.is_dir() and len(list(dataset.glob("part-*.parquet"))) >= 2:
            return
        time.sleep(0.05)
    pytest.fail("no part appeared in time")
