"""An ``mm/mmdet.ResNet`` student distilled end to end on a real local Ray (synthetic data ->
precompute -> 2 Ray Train workers), then exported from the run's files for MMDetection: the run's
resolved config carries ``student.mm``, and the real ``ResNet`` built from the snippet loads the
distilled weights with ``strict=True``."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import tiny_overrides
from tests.mm.real_classes import build_backbone, config_of, strict_load
from vfmkd_ray.cli import main
from vfmkd_ray.config import load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.models.students import build_student
from vfmkd_ray.run_files import read_backbone_state
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.training.trainer import run_training

pytestmark = [pytest.mark.mm, pytest.mark.ray]


def test_an_mmdet_resnet_student_distills_and_exports_for_mmdetection(local_ray, tmp_path):
    overrides = [
        *tiny_overrides(tmp_path),
        "name=mm_resnet",
        "student.name=mm/mmdet.ResNet",
        "student.mm.depth=18",
        "student.mm.out_indices=[0, 1, 2, 3]",
        "student.mm.norm_eval=false",  # mmdet's ResNet default freezes BN statistics
        "distill.terms.edge.student_stride=4",
        "train.epochs=3",
    ]
    cfg = load_config("configs/demo.yaml", overrides)
    write_synthetic_coco(cfg.data)
    run_precompute(cfg)
    summary = run_training(cfg)

    assert len(summary.history) == 3 and summary.steps_per_epoch == 2  # 11 images, 2 workers x 2
    losses = [record["train/loss"] for record in summary.history]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    assert summary.best_backbone is not None

    out = tmp_path / "exports" / "resnet18_kd.pth"
    best = summary.best_backbone[1]
    assert main(["export", "--checkpoint", best, "--format", "mmdet", "--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)["state_dict"]
    snippet = config_of(str(out.with_suffix(".mmdet.py")))
    assert snippet.model.backbone.type == "mmdet.ResNet" and snippet.model.backbone.depth == 18
    real = build_backbone(snippet.model.backbone)
    assert strict_load(real, state, "backbone.") == ([], [])

    distilled, _ = read_backbone_state(best)
    student = build_student(cfg.student)
    student.load_state_dict(distilled, strict=True)
    student.eval()
    real.eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(student(images), real(images), strict=True):
            torch.testing.assert_close(ours, theirs)
