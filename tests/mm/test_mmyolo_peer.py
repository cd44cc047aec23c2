"""The recipe parity benchmark's MMYOLO side (``benchmarks/mmyolo_trainer.py``): the packaged
YOLOv8-n config with only the dataset and machine settings changed, and its pipelines at the new
scale, checked on the real MMYOLO classes."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.mmyolo_trainer import adapted_config
from benchmarks.recipe_parity import write_dataset
from vfmkd_ray.openmmlab import mm_registry

pytestmark = pytest.mark.mm


def test_the_packaged_config_changes_only_data_scale_and_schedule_lengths(tmp_path):
    mm_registry("the MMYOLO peer test")
    from mmengine.registry import DefaultScope
    from mmyolo.registry import DATASETS

    DefaultScope.get_instance("vfmkd-mmyolo-peer", scope_name="mmyolo")

    data = tmp_path / "data"
    data.mkdir()
    write_dataset(data, images=12, image_size=96, seed=0)
    args = argparse.Namespace(
        data=data,
        work_dir=tmp_path / "work",
        img_scale=96,
        epochs=7,
        close_mosaic=2,
        val_interval=3,
        warmup_min_iters=0,
        batch_size=4,
        workers=0,
        seed=0,
    )
    cfg = adapted_config(args)

    switch = next(h for h in cfg.custom_hooks if h.type == "mmdet.PipelineSwitchHook")
    mosaic, affine = cfg.train_dataloader.dataset.pipeline[2:4]
    assert (mosaic.type, tuple(mosaic.img_scale)) == ("Mosaic", (96, 96))
    assert (affine.type, tuple(affine.border)) == ("YOLOv5RandomAffine", (-48, -48))
    assert [tuple(step.scale) for step in switch.switch_pipeline if "scale" in step] == [(96, 96)] * 2
    assert switch.switch_epoch == 5 and cfg.train_cfg.dynamic_intervals == [(5, 1)]
    assert cfg.default_hooks.param_scheduler.max_epochs == 7
    assert cfg.default_hooks.param_scheduler.warmup_mim_iter == 0
    assert cfg.model.bbox_head.head_module.num_classes == 3 == cfg.model.train_cfg.assigner.num_classes
    assert cfg.optim_wrapper.optimizer.batch_size_per_gpu == 4 == cfg.train_dataloader.batch_size
    # MMYOLO's own recipe is untouched.
    assert cfg.optim_wrapper.optimizer.lr == 0.01 and cfg.optim_wrapper.optimizer.nesterov
    assert cfg.model.backbone.widen_factor == 0.25 and cfg.model.backbone.deepen_factor == 0.33
    assert [h["type"] for h in cfg.custom_hooks][:2] == ["EMAHook", "mmdet.PipelineSwitchHook"]

    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    assert tuple(train[0]["inputs"].shape) == (3, 96, 96)  # a mosaic at the adapted scale
    assert max(val[0]["inputs"].shape[1:]) == 96
    assert len(train) + len(val) == 12
