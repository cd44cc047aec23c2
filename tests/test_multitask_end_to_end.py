"""``configs/multitask.yaml`` at tiny settings on a real local Ray with 2 workers, its dataset in
YOLO format (boxes and YOLO-seg polygons, one malformed line, one empty label file): yolov8
detection, sam_mask segmentation and feature KD against a stored SAM teacher (20% online) trained
together in the one loop through the Python API (``vk.train``: its run's metrics are metrics.csv);
a relaunch that resumes by name (a worker failure's restart from the last checkpoint is the one
loop's, tested in test_end_to_end's S3 test), ``vfmkd eval`` with box and mask metrics, and
``vfmkd export`` of the backbone (``vk.export`` writes the same tensors) and of the whole MMYOLO
detector."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vfmkd_ray as vk
from tests.conftest import tiny_overrides
from tests.heads.mmyolo_detector_layout import mmyolo_detector_shapes
from tests.yolo_layout import write_yolo_copy
from vfmkd_ray import run_files
from vfmkd_ray.cli import main
from vfmkd_ray.config import CONFIGS_DIR, dump_config, load_config, parse_override
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.models.students import build_student
from vfmkd_ray.training.trainer import run_training

pytestmark = pytest.mark.ray


def test_multitask_trains_resumes_evaluates_and_exports(local_ray, tmp_path, capsys):
    coco = load_config(CONFIGS_DIR / "multitask.yaml", tiny_overrides(tmp_path / "coco")).data
    write_synthetic_coco(coco)
    yolo = write_yolo_copy(Path(coco.root), tmp_path / "data")
    (yolo / "labels" / "000003.txt").write_text("")  # an image without objects
    with (yolo / "labels" / "000005.txt").open("a") as labels:
        labels.write("0 0.5 0.5 0.25\n")  # malformed: the image is skipped and recorded
    overrides = [
        *tiny_overrides(tmp_path),
        "name=multitask",
        "data.format=yolo",
        "data.on_bad_sample=skip",
        "heads.seg.max_masks=2",
        "train.best_metric=det/mAP",  # the best epoch by in-loop COCO scores, every 2nd and the last
        "train.eval_every_epochs=2",
        "train.channels_last=true",  # under DDP, through the resume and the exports
    ]
    cfg = load_config(CONFIGS_DIR / "multitask.yaml", overrides)
    [store] = vk.precompute(cfg)
    assert store.row_count == 15 and store.num_new == 15, "one image left out for its malformed line"
    # Typed values, as a notebook passes them: the command line's texts parsed as it parses them.
    run = vk.train(CONFIGS_DIR / "multitask.yaml", **dict(parse_override(o) for o in overrides))
    first = run.summary
    assert [r["epoch"] for r in first.history] == [1, 2] and first.checkpoint is not None
    with open(Path(run.run_dir, "metrics.csv"), newline="") as table:
        written = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(table)]
    assert run.metrics == written and list(run.metrics_frame().index) == [1, 2]
    assert [r["epoch"] for r in written] == [1, 2]
    assert run.best_model == first.best_model and vk.Run.open(run.run_dir).config == cfg
    skipped = [json.loads(line) for line in Path(run.run_dir, "bad_samples.jsonl").read_text().splitlines()]
    assert [(s["image_id"], s["stage"]) for s in skipped] == [("000005", "annotations")]
    assert "labels/000005.txt:" in skipped[0]["error"]
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
    from_api = vk.export(vk.Run.open(resumed.run_dir), format="mmyolo", out=tmp_path / "api" / "backbone.pth")
    assert from_api.files == [
        str(tmp_path / "api" / "backbone.pth"),
        str(tmp_path / "api" / "backbone.mmyolo.py"),
    ]
    snippets = [
        Path(f).read_text().replace(str(Path(f).parent), "DIR")
        for f in (from_api.files[1], backbone.with_suffix(".mmyolo.py"))
    ]
    assert snippets[0] == snippets[1], "the same config snippet, naming its own file"
    ours, theirs = (torch.load(f, weights_only=True)["state_dict"] for f in (from_api.files[0], backbone))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    detector = tmp_path / "exports" / "detector.pth"
    argv = ["export", "--checkpoint", resumed.best_model, "--format", "mmyolo", "--whole-detector"]
    assert main([*argv, "--out", str(detector)]) == 0
    state = torch.load(detector, weights_only=True)["state_dict"]
    assert {k: tuple(v.shape) for k, v in state.items()} == mmyolo_detector_shapes("n", num_classes=3)
    snippet = detector.with_suffix(".mmyolo.py").read_text()
    compile(snippet, "snippet", "exec")
    assert "yolov8_n_syncbn_fast_8xb16-500e_coco.py" in snippet and "num_classes = 3" in snippet
