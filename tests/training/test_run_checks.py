"""What the driver and the loop refuse before or while training, without Ray: a store made from
another dataset or missing parts, an unknown teacher, a non-finite loss; and the checkpoints Ray
never registered, removed on restart."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import build_store_in_process
from vfmkd_ray import run_files
from vfmkd_ray.batch import Batch
from vfmkd_ray.data.coco import read_image_records
from vfmkd_ray.data.image_ids import encode_image_id
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.models.build import run_teacher_shapes
from vfmkd_ray.store.parts import list_parts
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.training.step import NonFiniteLossError, train_step
from vfmkd_ray.training.task import build_task
from vfmkd_ray.training.teacher_stores import check_stores


def _with_data(cfg, **data):
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=data)})


def test_a_store_from_another_dataset_is_refused_unless_allowed(tiny_config, tmp_path: Path):
    build_store_in_process(tiny_config)  # 16 images
    other = _with_data(tiny_config, root=str(tmp_path / "other"))
    other.data.synthetic.num_images = 8
    write_synthetic_coco(other.data)
    records = read_image_records(other.data)
    with pytest.raises(FeatureStoreError) as err:
        check_stores(other, records)
    message = str(err.value)
    assert "was made from a dataset of 16 images, not from data.root" in message
    assert "(8 images" in message and "data.allow_store_from_other_dataset=true" in message
    allowed = _with_data(other, allow_store_from_other_dataset=True)
    assert check_stores(allowed, records).primary is not None


def test_a_store_missing_a_part_is_refused_naming_both_counts(tiny_config):
    dataset = build_store_in_process(tiny_config)
    check_stores(tiny_config, read_image_records(tiny_config.data))
    Path(list_parts(dataset)[0]).unlink()
    with pytest.raises(
        FeatureStoreError,
        match=r"holds 3 parts \(1 of its indexed parts missing, 0 not indexed\), its manifest says 16 rows",
    ):
        check_stores(tiny_config, read_image_records(tiny_config.data))


def test_an_unknown_teacher_is_named_before_any_store_is_looked_for(tiny_config):
    bad = tiny_config.model_copy(deep=True)
    bad.teachers["sam"].name = "sam_vit_q"
    with pytest.raises(ValueError, match="unknown teacher 'sam_vit_q'; valid names: .*sam_vit_b"):
        check_stores(bad, [])


def test_a_non_finite_loss_names_where_and_the_images(tiny_config):
    task = build_task(tiny_config, run_teacher_shapes(tiny_config), 10, torch.device("cpu"))
    ids_BL = torch.from_numpy(np.stack([encode_image_id("000007"), encode_image_id("a b")]))
    shapes = run_teacher_shapes(tiny_config)["sam"]
    features = {f"sam/{layer}": torch.full((2, *shape), float("nan")) for layer, shape in shapes.items()}
    batch = Batch(torch.randn(2, 3, 64, 64), torch.full((2, 2), 64), features, image_ids_BL=ids_BL)
    with pytest.raises(NonFiniteLossError) as err:
        train_step(task.parts.model, batch, task, 10.0, "epoch 3 step 2/5")
    message = str(err.value)
    assert message.startswith("epoch 3 step 2/5: the loss is not finite {")
    assert "'loss': nan" in message and "'loss/feature_mse': nan" in message
    assert "on images ['000007', 'a b']" in message


def test_only_checkpoints_ray_registered_survive_a_restart(tmp_path: Path):
    run = tmp_path / "run"
    for name in ("checkpoint_a", "checkpoint_b", "checkpoint_orphan"):
        (run / name).mkdir(parents=True)
        (run / name / "training_state.pt").write_bytes(b"state")
    assert run_files.remove_unregistered_checkpoints(str(run)) == [], "no snapshot: nothing is deleted"
    (run / "checkpoint_manager_snapshot.json").write_text("{not json")
    assert run_files.remove_unregistered_checkpoints(str(run)) == [], "an unreadable snapshot deletes nothing"
    snapshot = {
        "ray_version": "2.60.0",
        "checkpoint_results": [{"checkpoint_dir_name": "checkpoint_a", "metrics": {}}],
        "latest_checkpoint_result": None,
        "pending_training_results": [{"checkpoint_dir_name": "checkpoint_b"}],
    }
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps(snapshot))
    assert run_files.remove_unregistered_checkpoints(str(run)) == [str(run / "checkpoint_orphan")]
    assert sorted(p.name for p in run.glob("checkpoint_*") if p.is_dir()) == ["checkpoint_a", "checkpoint_b"]
