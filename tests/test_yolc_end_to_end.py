"""YOLC detection distillation in real Ray Train workers, through the one loop: a student yolc head
distilled from a teacher run's ``best_model.pth`` (global/local KD, crop supervision, LSM
pictures) and FGD against the same run as a live ``run`` teacher, on 2 workers, and ``vfmkd eval``.
(Relaunch-resume of the one loop is the multitask and S3 tests'.) Its tracking server is down: a
warning, and the run finishes.

The teacher file is written in-process (a YOLOv8-s model with a yolc head); training one through
Ray is the same path the student run takes."""

import logging
import math
import os

import pytest

from tests.heads.yolc.conftest import yolc_overrides
from vfmkd_ray import run_files
from vfmkd_ray.cli import main
from vfmkd_ray.config import dump_config, load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.models.build import build_model
from vfmkd_ray.training.trainer import run_training

pytestmark = pytest.mark.ray


def test_distilled_student_trains_on_two_workers_and_evaluates(local_ray, tmp_path, capsys, caplog):
    # 2 workers: batches with and without cluster crops meet in one DDP step and one reduction.
    base = [*yolc_overrides(tmp_path), "train.epochs=2", "train.num_workers=2", "train.cpus_per_worker=1"]
    teacher_cfg = load_config(None, [*base, "name=teacher", "student.size=s"])
    write_synthetic_coco(teacher_cfg.data)
    teacher_dir = tmp_path / "teacher"
    run_files.write_best(
        str(teacher_dir), build_model(teacher_cfg).model, teacher_cfg.model_dump(mode="json")
    )

    student_overrides = [
        *base,
        "name=student",
        # Relative, as users write it: the workers run elsewhere and must get it absolute.
        f"heads.det.kd={{teacher_ckpt: {os.path.relpath(teacher_dir / run_files.BEST_MODEL)}}}",
        "heads.det.lsm_visualize=true",
        # FGD on the stride-4 neck against the same run, as a live `run` teacher (no store).
        f"teachers.detector={{name: run, weights: {teacher_dir / run_files.BEST_MODEL}, input_size: 128}}",
        "data.missing_features=online",
        "distill.terms.fgd={type: fgd, teacher: detector, teacher_layer: neck_s4, student_source: neck}",
        "heads.det.lsm.score_threshold=0.05",  # an early teacher is unsure: still produce crops
        # MMYOLO's augmentation: the live teachers see the student's mosaic, so it is allowed here.
        "data.augment.pipeline=yolov8",
        "data.augment.close_mosaic_epochs=1",
    ]
    # A tracking server that is not there: one warning from rank 0, and the run goes on.
    dead = ["tracking.backend=mlflow", "tracking.uri=http://127.0.0.1:9"]
    caplog.set_level(logging.WARNING, logger="vfmkd_ray")
    student = run_training(load_config(None, [*student_overrides, *dead]))
    warned = [
        r.getMessage() for r in caplog.records if "tracking (mlflow at http://127.0.0.1:9)" in r.getMessage()
    ]
    assert len(warned) == 1 and "The run goes on" in warned[0], warned
    first = student.history[0]
    assert {"train/det/kd/hm", "train/det/kd/coarse", "train/det/kd/refine", "train/det/crops"} <= set(first)
    assert {"train/loss/fgd", "train/fg/fgd", "val/loss/fgd"} <= set(first)
    assert first["train/det/kd/patches"] > 0
    assert (tmp_path / "runs" / "student" / "pictures" / "epoch_001_det_lsm.png").exists()

    assert [r["epoch"] for r in student.history] == [1, 2]
    assert [r["data/mosaic"] for r in student.history] == [1.0, 0.0]  # the last epoch: no mosaic
    assert all(math.isfinite(v) for r in student.history for v in r.values() if isinstance(v, float))

    config_file = tmp_path / "student.yaml"
    config_file.write_text(dump_config(load_config(None, student_overrides)))
    assert main(["eval", str(config_file)]) == 0
    assert "| det | crop_refine |" in capsys.readouterr().out
