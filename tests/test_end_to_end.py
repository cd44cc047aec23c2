"""End to end on a real local Ray: synthetic data -> precompute -> 2-worker training -> backbone.

These start Ray (slow); everything else in the suite is Ray-free.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import files_holding, lose_part, tiny_overrides
from vfmkd_ray import run_files, storage
from vfmkd_ray.config import load_config
from vfmkd_ray.console import LOG_DIR_ENV
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.losses.config import AdaptiveWeightConfig
from vfmkd_ray.object_storage import S3Config
from vfmkd_ray.store.parts import list_parts, stored_image_ids
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.training.fault_injection import FAIL_ONCE_ENV
from vfmkd_ray.training.trainer import run_training

pytestmark = pytest.mark.ray
FAIL_MARKER = "/tmp/vfmkd-fail-once-marker"


def test_a_bad_image_is_one_line_naming_it_and_the_log(tmp_path):
    """``vfmkd precompute`` as a person runs it: a corrupt image under ``on_bad_sample: error`` is
    one line naming the image and the log file, which holds Ray's traceback."""
    overrides = [*tiny_overrides(tmp_path), "data.synthetic.num_images=8"]
    cfg = load_config(None, overrides)
    write_synthetic_coco(cfg.data)
    Path(cfg.data.root, "images", "000003.png").write_bytes(b"not a png")
    env = {**os.environ, LOG_DIR_ENV: str(tmp_path / "logs")}
    done = subprocess.run(
        [sys.executable, "-m", "vfmkd_ray.cli", "precompute", "configs/demo.yaml", *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2
    error = [line for line in done.stderr.splitlines() if not line.startswith("[vfmkd] ")]
    assert len(error) == 1, done.stderr
    assert error[0].startswith("vfmkd precompute: error: cannot decode image ")
    assert "000003.png: not in an image format PIL can read (full log: " in error[0]
    log_file = Path(error[0].rsplit("(full log: ", 1)[1].rstrip(")"))
    assert log_file.parent == tmp_path / "logs" and "Traceback" in log_file.read_text()
    assert "Traceback" not in done.stdout + done.stderr
    assert "Execution plan" not in done.stdout + done.stderr + log_file.read_text()

    verbose = subprocess.run(
        [sys.executable, "-m", "vfmkd_ray.cli", "precompute", "configs/demo.yaml", *overrides, "--verbose"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    # --verbose: Ray's own output (Ray Data's execution plan, the worker's traceback) on the terminal.
    assert verbose.returncode == 2 and "Execution plan" in verbose.stderr and "Traceback" in verbose.stderr


RAY_TABLES = ("Execution plan", "Operator", "(RayTrainWorker", "(raylet)", "pid=", "Tip:")


def test_the_demo_prints_a_short_console_with_the_summary_last_and_tracks_the_run(tmp_path, mlflow_uri):
    """``vfmkd demo`` as a person runs it: the product's lines and the summary last, no Ray table;
    the run's curves.png exists and MLflow holds the run's metrics, equal to its metrics.csv."""
    import mlflow

    overrides = [*tiny_overrides(tmp_path), "tracking.backend=mlflow", f"tracking.uri={mlflow_uri}"]
    done = subprocess.run(
        [sys.executable, "-m", "vfmkd_ray.cli", "demo", *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # as a terminal shows both: the summary must be last of all
        text=True,
        env={**os.environ, LOG_DIR_ENV: str(tmp_path / "logs")},
        timeout=600,
    )
    printed = done.stdout.rstrip().splitlines()
    assert done.returncode == 0, done.stdout
    assert len(printed) < 80 and printed[-1].startswith("wall time"), done.stdout
    assert not [line for line in printed if any(table in line for table in RAY_TABLES)], done.stdout
    assert sum(line.startswith("[vfmkd] epoch ") for line in printed) == 2  # one line per epoch
    run_dir = next(line.split()[-1] for line in printed if line.startswith("run directory"))
    curves = Path(run_dir, run_files.CURVES_PNG)
    assert curves.read_bytes().startswith(b"\x89PNG") and f"curves            {curves}" in done.stdout

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(run_files.read_tracking_record(run_dir)["run_id"])
    assert run.info.status == "FINISHED"
    table = run_files.read_metrics_table(run_dir)
    for key in ("val/loss", "train/loss", "val/cos/feature_mse", "lr", "throughput/train_images_per_s"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert logged == [(int(r["epoch"]), pytest.approx(r[key], rel=1e-6)) for r in table]
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert artifacts == {run_files.CURVES_PNG, run_files.BEST_BACKBONE_SAFETENSORS}


# Made at import, so that no file (the test sources included) can hold them by chance.
MARKER_KEY_ID, MARKER_SECRET = f"AKID{uuid.uuid4().hex[:12].upper()}", f"marker-secret-{uuid.uuid4().hex}"


def test_s3_end_to_end_with_resume_and_no_secret_in_any_log(
    s3_bucket, product_ray, tiny_config, monkeypatch, capfd
):
    """Images, features and run storage on the S3 server; a worker failure restarts the worker
    group from the S3 checkpoint, and a relaunch restores from S3 too. The S3 keys are markers
    given in the config: they reach the workers (every read works) but appear nowhere: not in the
    printed output, the store, the run directory, or any file of Ray's session directory. The run
    uses MMYOLO's recipe (SGD in groups, warm-up, EMA): the EMA survives the restart and the
    relaunch, one update per optimiser step of the run. The local Ray keeps idle worker processes
    that outnumber its free CPUs (a pass's read/decode workers between two bursts)."""
    import ray

    Path(FAIL_MARKER).unlink(missing_ok=True)
    monkeypatch.setenv(FAIL_ONCE_ENV, f"1:{FAIL_MARKER}")  # a local Ray inherits the environment
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)  # the keys come from the config alone
    cfg = tiny_config.model_copy(
        update={
            "data": tiny_config.data.model_copy(update={"root": f"{s3_bucket}/coco"}),
            "store": tiny_config.store.model_copy(update={"root": f"{s3_bucket}/features", "codec": "int8"}),
            "train": tiny_config.train.model_copy(
                update={
                    "storage_path": f"{s3_bucket}/runs",
                    "optimizer": "sgd",
                    "lr": 0.01,
                    "warmup_epochs": 1.0,
                    "warmup_min_steps": 2,
                    "ema": True,
                }
            ),
            "s3": S3Config(access_key_id=MARKER_KEY_ID, secret_access_key=MARKER_SECRET),
        }
    )
    cfg.s3.apply()
    write_synthetic_coco(cfg.data)
    [store] = run_precompute(cfg)
    assert store.dataset == f"{s3_bucket}/features/sam_vit_b/64" and store.row_count == 16
    first = run_training(cfg)
    assert Path(FAIL_MARKER).exists(), "the injected worker failure did not happen"
    Path(FAIL_MARKER).unlink()
    assert [record["epoch"] for record in first.history] == [1, 2]
    assert first.run_dir == f"{s3_bucket}/runs/tiny"
    assert first.checkpoint is not None and first.checkpoint.startswith(s3_bucket[len("s3://") :])
    assert storage.exists(first.best_backbone[0]) and storage.exists(f"{first.run_dir}/metrics.csv")

    longer = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 3})})
    resumed = run_training(longer)
    assert [record["epoch"] for record in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history
    state = torch.load(
        io.BytesIO(storage.read_bytes(f"s3://{resumed.checkpoint}/{run_files.STATE_FILE}")), weights_only=True
    )
    assert state["ema"]["updates"] == state["counters"]["step"] == resumed.history[-1]["step"] > 0

    session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
    printed = capfd.readouterr()
    leaks = files_holding(session_dir, [MARKER_KEY_ID, MARKER_SECRET])
    leaks += _objects_holding(s3_bucket, [MARKER_KEY_ID, MARKER_SECRET])
    leaks += [f"printed {stream}" for stream, text in zip(("stdout", "stderr"), printed, strict=True)
              if MARKER_KEY_ID in text or MARKER_SECRET in text]  # fmt: skip
    assert any(session_dir.rglob("*.log")), f"no Ray logs under {session_dir} to check"
    assert not leaks, f"the S3 keys appear in {leaks}"
    _idle_workers_are_kept()


def _idle_workers_are_kept() -> None:
    """With all free CPUs but one held, four quarter-CPU tasks alive at once leave four idle workers
    beside one free CPU: Ray's default kills those beyond the free CPUs after a second idle (as it
    killed a pass's decode workers beside the Train workers); ``ensure_ray``'s local Ray keeps them."""
    import ray

    @ray.remote(num_cpus=0)
    class Barrier:
        def __init__(self, parties: int):
            self.parties, self.arrived = parties, asyncio.Event()
            self.count = 0

        async def arrive(self) -> None:
            self.count += 1
            if self.count == self.parties:
                self.arrived.set()
            await self.arrived.wait()

    @ray.remote
    class CpuHolder:
        def ready(self) -> bool:
            return True

    @ray.remote(num_cpus=0.25)
    def worker_pid(barrier) -> int:
        ray.get(barrier.arrive.remote())  # four processes alive at once
        return os.getpid()

    holder = CpuHolder.options(num_cpus=ray.available_resources()["CPU"] - 1).remote()
    barrier = Barrier.remote(4)
    ray.get(holder.ready.remote(), timeout=60)
    pids = set(ray.get([worker_pid.remote(barrier) for _ in range(4)], timeout=120))
    assert len(pids) == 4
    time.sleep(3.0)  # Ray looks for workers idle over its threshold every 0.2 s
    idle = {pid for pid in pids if _process_title(pid).startswith("ray::IDLE")}
    assert idle == pids, f"idle workers killed: {sorted(pids - idle)}"
    for actor in (holder, barrier):
        ray.kill(actor)


def _process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _objects_holding(bucket: str, markers: list[str]) -> list[str]:
    fs, root = storage.filesystem(bucket)
    hits = []
    for key in fs.find(root):
        data = fs.cat_file(key)
        hits += [key for marker in markers if marker.encode() in data]
    return hits


def test_bad_images_and_rows_stop_a_run_or_are_skipped_and_listed(local_ray, tiny_config):
    """A corrupt image at precompute is skipped (and a re-run retries only it); 16 flipped bytes in
    a stored row (the part still reads, the values turn into NaN and noise) stop training naming
    the image, or, with the skip policies, are skipped and listed with a corrupt image and a
    missing row. (A successful run with its saved backbone is the multitask end-to-end test.)"""
    cfg = tiny_config.model_copy(
        update={
            "data": tiny_config.data.model_copy(update={"on_bad_sample": "skip"}),
            "train": tiny_config.train.model_copy(update={"epochs": 1}),  # one epoch shows the counts
            "name": "skips",
        }
    )
    write_synthetic_coco(cfg.data)
    images = Path(cfg.data.root, "images")
    (images / "000002.png").write_bytes(b"corrupt before precompute")
    [store] = run_precompute(cfg)
    assert store.row_count == 15 and store.num_skipped == 1
    [again] = run_precompute(cfg)
    assert again.num_new == 1 and again.row_count == 15, "only the unreadable image is tried again"
    assert sorted(stored_image_ids(store.dataset)) == sorted(str(i) for i in range(1, 17) if i != 2)

    part = list_parts(store.dataset)[0]
    table = pq.read_table(part)
    row = next(i for i, image_id in enumerate(table.column("image_id").to_pylist()) if image_id != "5")
    flipped_id = table.column("image_id")[row].as_py()
    values = [bytearray(v) for v in table.column("feat.image_embed").to_pylist()]
    middle = len(values[row]) // 2
    values[row][middle : middle + 16] = b"\xff" * 16  # 0xffff is a NaN in fp16
    column = table.column_names.index("feat.image_embed")
    flipped = table.set_column(column, "feat.image_embed", pa.array([bytes(v) for v in values], pa.binary()))
    pq.write_table(flipped, part, row_group_size=1)  # flipped bytes leave the layout as precompute wrote it

    with pytest.raises(FeatureStoreError, match="1 images of .* have no feature row"):
        run_training(cfg)  # missing_features: error by default
    strict = cfg.model_copy(
        update={
            "name": "strict",
            "data": cfg.data.model_copy(update={"on_bad_sample": "error", "missing_features": "skip"}),
            # No restarts: a bad row fails every retry the same way, and the suite's time is dear.
            "train": cfg.train.model_copy(update={"max_failures": 0}),
        }
    )
    with pytest.raises(
        FeatureStoreError, match=rf"image {flipped_id} layer image_embed .* fails its checksum"
    ):
        run_training(strict)

    (images / "000005.png").write_bytes(b"corrupt after precompute")
    skipping = cfg.model_copy(update={"data": cfg.data.model_copy(update={"missing_features": "skip"})})
    summary = run_training(skipping)
    assert summary.num_bad_samples == 3
    assert summary.history[-1]["data/bad_samples"] == 3
    lines = [json.loads(line) for line in Path(summary.run_dir, "bad_samples.jsonl").read_text().splitlines()]
    stages = sorted(f"{line['stage']}:{line['image_id']}" for line in lines)
    assert stages == sorted(["missing-features:2", "train:5", f"train:{flipped_id}"])
    assert any("fails its checksum" in line["error"] for line in lines)


def test_two_teachers_with_missing_rows_and_online_ratio_warped_into_mosaics(local_ray, two_teacher_config):
    """SAM (primary) and DINOv2 at another input size, each with its own store and loss term; rows
    missing from either store, and a 25% online share, run both teachers in the worker. The samples
    are MMYOLO's mosaics: both stores' maps are warped into each canvas (``under_augmentation:
    warp``), a tile whose row a store lacks is masked, and the online samples' live targets cover
    their whole canvas. The DINOv2 term standardises its targets by its store's channel statistics,
    and its weight is adaptive (its gradient share probed in both DDP workers)."""
    augment = two_teacher_config.data.augment.model_copy(
        update={"pipeline": "yolov8", "close_mosaic_epochs": 0}
    )
    teachers = {
        alias: teacher.model_copy(update={"under_augmentation": "warp"})
        for alias, teacher in two_teacher_config.teachers.items()
    }
    # DINOv2's term compares channel-standardised targets (its store's statistics, stored and live).
    terms = dict(two_teacher_config.distill.terms)
    # Its weight is adaptive: every step of the two DDP workers probes its share of the backbone's gradient.
    adaptive = AdaptiveWeightConfig(rho=0.3, delta=0.05, probe_every=1)
    terms["dino_s32"] = terms["dino_s32"].model_copy(update={"normalize": "channel", "adaptive": adaptive})
    cfg = two_teacher_config.model_copy(
        update={
            "name": "online",
            "teachers": teachers,
            "data": two_teacher_config.data.model_copy(
                update={"missing_features": "online", "augment": augment}
            ),
            "distill": two_teacher_config.distill.model_copy(update={"online_ratio": 0.25, "terms": terms}),
            "train": two_teacher_config.train.model_copy(update={"epochs": 1}),
        }
    )
    write_synthetic_coco(cfg.data)
    sam, dino = run_precompute(cfg)
    assert (sam.teacher, dino.teacher) == ("sam", "dino") and dino.dataset.endswith("dinov2_vits14/56")
    lose_part(sam.dataset, 0)  # 4 images lose their SAM rows
    lose_part(dino.dataset, -1)  # and up to 4 others their DINOv2 rows
    summary = run_training(cfg)
    assert summary.num_train + summary.num_val == 16 and summary.num_bad_samples == 0
    shares = [record["train/data/online_share"] for record in summary.history]
    assert all(share > 0 for share in shares)
    last = summary.history[-1]
    assert {"val/cos/feature_mse", "val/cos/dino_s32", "train/loss/dino_s32"} <= set(last)
    assert last["data/mosaic"] == 1.0 and math.isfinite(last["train/loss/dino_s32"])
    assert 0 < last["train/loss/feature_mse"] < math.inf
    assert last["train/grad_norm/dino_s32"] > 0 and 0 < last["grad_share/dino_s32"] < math.inf
    assert last["kd_weight/dino_s32"] == 1.0


def test_two_teachers_on_stored_views_then_warped_in_the_close_mosaic_epoch(local_ray, two_teacher_config):
    """Precompute through Ray stores each image's plain view and one augmented view per teacher (SAM
    at 64 px, DINOv2 at 56: the same records, each at its own size). Epoch 1 trains on the stored
    views (``under_augmentation: views``: records redrawn, checked against both stores, replayed for
    the student; nothing masked), epoch 2 (close-mosaic) warps the plain view 0. The DINOv2 term
    compares PHI-S-standardised targets (its store's transform, shipped to the workers)."""
    augment = two_teacher_config.data.augment.model_copy(
        update={"pipeline": "yolov8", "close_mosaic_epochs": 1}
    )
    terms = dict(two_teacher_config.distill.terms)
    terms["dino_s32"] = terms["dino_s32"].model_copy(update={"normalize": "phi_s"})
    cfg = two_teacher_config.model_copy(
        update={
            "name": "views",
            "teachers": {
                alias: teacher.model_copy(update={"under_augmentation": "views"})
                for alias, teacher in two_teacher_config.teachers.items()
            },
            "store": two_teacher_config.store.model_copy(update={"augment": "yolov8", "views_per_image": 2}),
            "data": two_teacher_config.data.model_copy(update={"augment": augment}),
            "distill": two_teacher_config.distill.model_copy(update={"terms": terms}),
        }
    )
    write_synthetic_coco(cfg.data)
    sam, dino = run_precompute(cfg)
    assert sam.row_count == dino.row_count and sam.num_skipped == dino.num_skipped == 0
    summary = run_training(cfg)
    assert summary.num_bad_samples == 0 and len(summary.history) == 2
    # Every image's plain view, and one augmented view of each training image.
    assert sam.row_count == 16 + summary.num_train
    viewed, closed = summary.history
    assert viewed["data/mosaic"] == 1.0 and closed["data/mosaic"] == 0.0
    for record in summary.history:
        assert math.isfinite(record["train/loss/dino_s32"]) and record["train/loss/feature_mse"] > 0
