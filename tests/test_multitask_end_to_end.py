"""``configs/multitask.yaml`` at tiny settings on a real local Ray with 2 workers: yolov8 detection,
sam_mask segmentation and feature KD against a stored SAM teacher (20% online) trained together in
the one loop; a relaunch that resumes by name (a worker failure's restart from the last checkpoint
is the one loop's, tested in test_end_to_end's S3 test), ``vfmkd eval`` with box and mask metrics,
and ``vfmkd export`` of the backbone and of the whole MMYOLO detector."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_overrides
from tests.heads.mmyolo_detector_layout import mmyolo_detector_shapes
from vfmkd_ray import run_files
from vfmkd_ray.cli import main
from vfmkd_ray.config import CONFIGS_DIR, dump_config, load_config
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.models.students import build_student
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.train.trainer import run_training

pytestmark = pytest.mark.ray


def test_multitask_trains_resumes_evaluates_and_exports(local_ray, tmp_path, capsys):
    overrides = [
        *tiny_overrides(tmp_path),
        "name=multitask",
        "heads.seg.max_masks=2",
        "train.best_metric=det/mAP",  # the best epoch by in-loop COCO scores, every 2nd and the last
        "train.eval_every_epochs=2",
    ]
    cfg = load_config(CONFIGS_DIR / "multitask.yaml", overrides)
    write_synthetic_coco(cfg.data)
    [store] = run_precompute(cfg)
    assert store.row_count == 16 and store.num_new == 16
    first = run_training(cfg)
    assert [r["epoch"] for r in first.history] == [1, 2] and first.checkpoint is not None
    backbone = load_file(first.best_backbone[0])
    build_student(cfg.student).load_state_dict(backbone, strict=True)
    assert set(torch.load(first.best_backbone[1], weights_only=True)["backbone"]) == set(backbone)
    assert "name: multitask" in Path(first.run_dir, "resolved_config.yaml").read_text()
    record = first.history[-1]
    for key in (
        "loss/det",
        "det/cls",
        "det/bbox",
        "det/dfl",
        "loss/seg",
        "seg/focal",
        "seg/kd",
        "loss/feature_mse",
    ):
        assert f"train/{key}" in record and f"val/{key}" in record, key
    assert "val/cos/feature_mse" in record and record["train/data/online_share"] >= 0
    assert "det/mAP" not in first.history[0] and {"det/mAP", "det/AP50", "det/AP_small"} <= set(record)

    # What a worker that died inside its report leaves: a whole checkpoint Ray never registered.
    orphan = Path(first.run_dir, "checkpoint_2026-01-01_00-00-00.000000")
    shutil.copytree(Path(first.checkpoint), orphan)

    longer = load_config(CONFIGS_DIR / "multitask.yaml", [*overrides, "train.epochs=3"])
    resumed = run_training(longer)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history, "epochs 1-2 came from the checkpoint"
    assert not orphan.exists(), "the unregistered checkpoint was removed on restart"
    snapshot = json.loads(Path(first.run_dir, "checkpoint_manager_snapshot.json").read_text())
    registered = {r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]}
    on_disk = {p.name for p in Path(first.run_dir).glob("checkpoint_*") if p.is_dir()}
    assert on_disk == registered and len(on_disk) <= cfg.train.num_checkpoints_to_keep

    config_file = tmp_path / "multitask.yaml"
    config_file.write_text(dump_config(longer))
    capsys.readouterr()
    assert main(["eval", str(config_file)]) == 0
    printed = capsys.readouterr().out
    assert "| det | default |" in printed and "| seg | default |" in printed
    assert "| feature_mse |" in printed, "the teacher cosine of the feature term"
    # The best files hold the epoch with the highest in-loop mAP, and `vfmkd eval` of them agrees.
    evaluated = json.loads(Path(first.run_dir, run_files.EVAL_FILE).read_text())
    in_loop = max(r["det/mAP"] for r in resumed.history if "det/mAP" in r)
    assert evaluated["heads"]["det"]["default"]["mAP"] == pytest.approx(in_loop, abs=1e-6)

    backbone = tmp_path / "exports" / "backbone.pth"
    assert (
        main(["export", "--checkpoint", resumed.best_model, "--format", "mmyolo", "--out", str(backbone)])
        == 0
    )
    detector = tmp_path / "exports" / "detector.pth"
    argv = ["export", "--checkpoint", resumed.best_model, "--format", "mmyolo", "--whole-detector"]
    assert main([*argv, "--out", str(detector)]) == 0
    state = torch.load(detector, weights_only=True)["state_dict"]
    assert {k: tuple(v.shape) for k, v in state.items()} == mmyolo_detector_shapes("n", num_classes=3)
    snippet = detector.with_suffix(".mmyolo.py").read_text()
    compile(snippet, "snippet", "exec")
    assert "yolov8_n_syncbn_fast_8xb16-500e_coco.py" in snippet and "num_classes = 3" in snippet
