"""Detection KD terms, FGD, a short Ray-free training run and ``vfmkd eval``."""

import copy
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from vfmkd_ray.cli import main
from vfmkd_ray.config import ConfigError, dump_config, load_config
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.detection.checkpoint import FrozenDetector, load_detector, save_detector
from vfmkd_ray.detection.dataset import DetectionSampleDecoder, read_detection_records
from vfmkd_ray.detection.kd import detection_kd
from vfmkd_ray.detection.model import YOLCDetector
from vfmkd_ray.detection.step import TEACHER_NECK, DetectionDistiller, detection_step, neck_info
from vfmkd_ray.losses.base import KDBatch
from vfmkd_ray.losses.config import FGDConfig
from vfmkd_ray.losses.fgd import box_masks
from vfmkd_ray.losses.registry import build_loss_terms
from vfmkd_ray.models.students import build_student
from vfmkd_ray.train.step import optimizer_step


def _batch(cfg, split="train", count=None):
    write_synthetic_coco(cfg.data)
    records, _ = read_detection_records(cfg.data, cfg.detection.num_classes)
    records = records[:count] if count else records
    columns = {k: np.array([asdict(r)[k] for r in records], dtype=object) for k in asdict(records[0])}
    decoder = DetectionSampleDecoder(cfg.detection.input_size, cfg.detection.max_objects, split, 0.0)
    data = next(decoder(columns))
    return (
        normalize(torch.from_numpy(data["image"])),
        torch.from_numpy(data["boxes"]),
        torch.from_numpy(data["labels"]),
    )


def test_tiny_object_data_has_dense_clusters_of_small_boxes(detection_config):
    write_synthetic_coco(detection_config.data)
    records, categories = read_detection_records(detection_config.data, 3)
    assert [c["name"] for c in categories] == ["car", "person", "boat"]
    sides = [b[2] - b[0] for r in records for b in r.boxes]
    assert min(sides) >= 5 and max(sides) <= 10
    assert np.mean([len(r.boxes) for r in records]) >= 6
    assert {label for r in records for label in r.labels} == {0, 1, 2}


@pytest.mark.parametrize("hm_kd", ["mse", "kl"])
def test_kd_terms_vanish_for_an_identical_teacher_and_never_reach_it(detection_config, hm_kd):
    cfg = detection_config
    distill = cfg.distill.model_copy(update={"hm_kd": hm_kd, "temperature": 2.0})
    detection = cfg.detection.model_copy(
        update={"lsm": cfg.detection.lsm.model_copy(update={"score_threshold": 0.05})}
    )
    torch.manual_seed(0)
    student = YOLCDetector(
        build_student(cfg.student), detection
    ).eval()  # BN on running stats, like the teacher
    teacher = FrozenDetector(copy.deepcopy(student))
    images, boxes, labels = _batch(cfg, count=4)
    out, teacher_out = student(images), teacher(images)
    kd = detection_kd(student, teacher, images, out, teacher_out, distill, detection)
    assert kd["kd/patches"] > 0, "the low threshold must produce crops, or the local term is untested"
    for name in ("kd", "kd/hm", "kd/coarse", "kd/refine"):
        assert float(kd[name]) == pytest.approx(0.0, abs=1e-7), name
    terms = build_loss_terms(
        load_config(None, ["task=detection", "distill.terms={fgd: {type: fgd}}"]).distill,
        neck_info(detection),
        {"detector": {"neck": tuple(teacher_out.neck_BCHW.shape[1:])}},
    )
    adapter = terms["fgd"].build_adapter()
    batch = KDBatch(images, torch.zeros(0), {TEACHER_NECK: teacher_out.neck_BCHW}, boxes=list(boxes))
    fgd, _ = terms["fgd"](adapter(out.neck_BCHW), batch)
    assert float(fgd) == pytest.approx(0.0, abs=1e-9)
    # A different student: every term is positive, and the teacher gets no gradient.
    torch.manual_seed(1)
    other = YOLCDetector(build_student(cfg.student), detection)
    step = detection_step(
        DetectionDistiller(other, terms), images, boxes, labels, detection, distill, teacher, terms
    )
    assert all(float(step[k]) > 0 for k in ("kd/hm", "kd/coarse", "kd/fgd"))
    step["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in other.parameters())


def test_fgd_masks_weight_boxes_by_inverse_area():
    boxes = [torch.tensor([[0.0, 0.0, 16.0, 16.0]]), torch.zeros(0, 4)]
    foreground, background = box_masks(boxes, image_size=64, grid=(16, 16), device="cpu")
    assert foreground[0, :5, :5].eq(1 / 25).all() and foreground[0, 5:, :].eq(0).all()
    assert background[0].sum() == pytest.approx(1.0) and background[1].sum() == pytest.approx(1.0)
    assert FGDConfig().temperature == 0.5 and FGDConfig().lambda_ == 5e-6
    with pytest.raises(ConfigError, match="distill.terms.fgd .*does not apply to task: features"):
        load_config(None, ["distill.terms.fgd.type=fgd"])


def test_short_training_lowers_the_loss_and_eval_scores_both_modes(detection_config, tmp_path, capsys):
    cfg = detection_config
    images, boxes, labels = _batch(cfg)
    torch.manual_seed(0)
    model = DetectionDistiller(YOLCDetector(build_student(cfg.student), cfg.detection), {})
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    losses = []
    for step in range(16):
        pick = torch.arange(step * 4, step * 4 + 4) % len(images)
        out = detection_step(model, images[pick], boxes[pick], labels[pick], cfg.detection, cfg.distill)
        optimizer_step(out["loss"], optimizer, scaler, list(model.parameters()), 10.0)
        losses.append(float(out["loss"]))
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])

    run_dir = Path(cfg.train.storage_path, cfg.name)
    save_detector(str(run_dir / "best_detector.pth"), model.detector, cfg.student, cfg.detection)
    reloaded = load_detector(str(run_dir / "best_detector.pth"))
    torch.testing.assert_close(reloaded.head.refine_weight, model.detector.head.refine_weight)
    config_file = tmp_path / "det.yaml"
    config_file.write_text(dump_config(cfg))
    assert main(["eval", str(config_file), "--split", "all"]) == 0
    captured = capsys.readouterr()
    assert "16/16 images" in captured.err, "progress while evaluating"
    rows = [line for line in captured.out.splitlines() if line.startswith(("| whole", "| crop_refine"))]
    assert len(rows) == 2
    saved = json.loads((run_dir / "eval.json").read_text())
    assert set(saved["metrics"]) == {"whole", "crop_refine"}
    for figures in saved["metrics"].values():
        assert set(figures) == {"mAP", "AP50", "AP_small"} and all(0 <= v <= 1 for v in figures.values())
    assert saved["num_images"] == 16
