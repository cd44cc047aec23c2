"""Detection distillation in real Ray Train workers: a student distilled from a teacher detector
file (YOLC KD + FGD), a relaunch that resumes, and ``vfmkd eval``.

The teacher file is written in-process (a YOLOv8-s detector); training one through Ray is the
same path the student run takes, and the suite's time is better spent on the resume."""

import os

import pytest
import torch

from tests.detection.conftest import detection_overrides
from vfmkd_ray.cli import main
from vfmkd_ray.config import dump_config, load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.detection.checkpoint import save_detector
from vfmkd_ray.detection.model import YOLCDetector
from vfmkd_ray.detection.trainer import run_detection_training
from vfmkd_ray.models.students import build_student

pytestmark = pytest.mark.ray


def test_distilled_student_resumes_and_evaluates(local_ray, tmp_path, capsys):
    base = [
        *detection_overrides(tmp_path),
        "train.epochs=1",
        "train.num_workers=1",
        "train.cpus_per_worker=1",
    ]
    teacher_cfg = load_config(None, [*base, "name=teacher", "student.size=s"])
    write_synthetic_coco(teacher_cfg.data)
    teacher_file = tmp_path / "teacher" / "best_detector.pth"
    torch.manual_seed(0)
    teacher = YOLCDetector(build_student(teacher_cfg.student), teacher_cfg.detection)
    save_detector(str(teacher_file), teacher, teacher_cfg.student, teacher_cfg.detection)

    student_overrides = [
        *base,
        "name=student",
        "distill.enable=true",
        # Relative, as users write it: the workers run elsewhere and must get it absolute.
        f"distill.teacher_ckpt={os.path.relpath(teacher_file)}",
        "distill.terms={fgd: {type: fgd}}",
        "distill.lsm_visualize=true",
        "detection.lsm.score_threshold=0.05",  # an early teacher is unsure: still produce crops
    ]
    student = run_detection_training(load_config(None, student_overrides))
    first = student.history[0]
    assert {"train/kd/hm", "train/kd/coarse", "train/kd/refine", "train/kd/fgd", "train/loss/crops"} <= set(
        first
    )
    assert first["train/kd/patches"] > 0
    assert (tmp_path / "runs" / "student" / "lsm" / "epoch_001.png").exists()

    longer = load_config(None, [*student_overrides, "train.epochs=2"])
    resumed = run_detection_training(longer)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.history[0] == first, "epoch 1 came from the checkpoint, not a re-run"

    config_file = tmp_path / "student.yaml"
    config_file.write_text(dump_config(longer))
    assert main(["eval", str(config_file)]) == 0
    assert "| crop_refine |" in capsys.readouterr().out
