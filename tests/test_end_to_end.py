"""End to end on a real local Ray: synthetic data -> precompute -> 2-worker training -> backbone.

These start Ray (slow); everything else in the suite is Ray-free.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vfmkd_ray import storage
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.store.parts import list_parts, stored_image_ids
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.train.fault_injection import FAIL_ONCE_ENV
from vfmkd_ray.train.trainer import run_training

pytestmark = pytest.mark.ray
FAIL_MARKER = "/tmp/vfmkd-fail-once-marker"


def test_precompute_resumes_and_a_mis_shaped_row_stops_training(local_ray, tiny_config):
    """(A successful 2-worker run with its saved backbone is the multitask end-to-end test; the
    relaunch-resume of a features run is the S3 test's.)"""
    write_synthetic_coco(tiny_config.data)
    [first] = run_precompute(tiny_config)
    assert first.row_count == first.num_images == 16 and first.num_new == 16
    [again] = run_precompute(tiny_config)
    assert again.num_new == 0 and again.row_count == 16
    assert sorted(stored_image_ids(first.dataset)) == sorted(str(i) for i in range(1, 17))

    # A store row with the wrong shape stops training with a message naming the image.
    part = list_parts(first.dataset)[0]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    shapes = pa.array([[256, 2, 2]] * table.num_rows, pa.list_(pa.int32()))
    index = table.column_names.index("feat.image_embed.shape")
    pq.write_table(table.set_column(index, "feat.image_embed.shape", shapes), part)
    bad_ids = "|".join(table.column("image_id").to_pylist())  # every row of the part is bad
    with pytest.raises(FeatureStoreError, match=rf"image ({bad_ids}) layer image_embed .* \(256, 2, 2\)"):
        # No restarts: a bad row fails every retry the same way, and the suite's time is dear.
        train = tiny_config.train.model_copy(update={"max_failures": 0})
        run_training(tiny_config.model_copy(update={"name": "bad-shape", "train": train}))


def test_missing_image_is_named(local_ray, tiny_config):
    write_synthetic_coco(tiny_config.data)
    image = f"{tiny_config.data.root}/images/000003.png"
    import os

    os.remove(image)
    with pytest.raises(BadImageError, match="000003.png"):
        run_precompute(tiny_config)


@pytest.mark.parametrize("local_ray", [{FAIL_ONCE_ENV: f"1:{FAIL_MARKER}"}], indirect=True)
def test_s3_end_to_end_with_resume(s3_bucket, local_ray, tiny_config):
    """Images, features and run storage on the S3 server; a worker failure restarts the worker
    group from the S3 checkpoint, and a relaunch restores from S3 too."""
    Path(FAIL_MARKER).unlink(missing_ok=True)
    cfg = tiny_config.model_copy(
        update={
            "data": tiny_config.data.model_copy(update={"root": f"{s3_bucket}/coco"}),
            "store": tiny_config.store.model_copy(update={"root": f"{s3_bucket}/features", "codec": "int8"}),
            "train": tiny_config.train.model_copy(update={"storage_path": f"{s3_bucket}/runs"}),
        }
    )
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


def test_skip_policy_counts_and_lists_bad_samples(local_ray, tiny_config):
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

    with pytest.raises(FeatureStoreError, match="1 images of .* have no feature row"):
        run_training(cfg)  # missing_features: error by default

    (images / "000005.png").write_bytes(b"corrupt after precompute")
    skipping = cfg.model_copy(update={"data": cfg.data.model_copy(update={"missing_features": "skip"})})
    summary = run_training(skipping)
    assert summary.num_bad_samples == 2
    assert summary.history[-1]["data/bad_samples"] == 2
    lines = Path(summary.run_dir, "bad_samples.jsonl").read_text().splitlines()
    stages = sorted(json.loads(line)["stage"] + ":" + json.loads(line)["image_id"] for line in lines)
    assert stages == ["missing-features:2", "train:5"]


def test_two_teachers_with_missing_rows_and_online_ratio(local_ray, two_teacher_config):
    """SAM (primary) and DINOv2 at another input size, each with its own store and loss term; rows
    missing from either store, and a 25% online share, run both teachers in the worker."""
    cfg = two_teacher_config.model_copy(
        update={
            "name": "online",
            "data": two_teacher_config.data.model_copy(update={"missing_features": "online"}),
            "distill": two_teacher_config.distill.model_copy(update={"online_ratio": 0.25}),
            "train": two_teacher_config.train.model_copy(update={"epochs": 1}),
        }
    )
    write_synthetic_coco(cfg.data)
    sam, dino = run_precompute(cfg)
    assert (sam.teacher, dino.teacher) == ("sam", "dino") and dino.dataset.endswith("dinov2_vits14/56")
    Path(list_parts(sam.dataset)[0]).unlink()  # 4 images lose their SAM rows
    Path(list_parts(dino.dataset)[-1]).unlink()  # and up to 4 others their DINOv2 rows
    summary = run_training(cfg)
    assert summary.num_train + summary.num_val == 16 and summary.num_bad_samples == 0
    shares = [record["train/data/online_share"] for record in summary.history]
    assert all(share > 0 for share in shares)
    last = summary.history[-1]
    assert {"val/cos/feature_mse", "val/cos/dino_s32", "train/loss/dino_s32"} <= set(last)
