"""The yolc head: its data, KD terms against a frozen teacher run, a short Ray-free training run
through the one step, and ``vfmkd eval`` with and without crop refinement."""

import copy
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.batches import dataset_batch, take
from vfmkd_ray import run_files
from vfmkd_ray.cli import main
from vfmkd_ray.config import dump_config
from vfmkd_ray.data.coco import read_dataset
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.heads.yolc.config import YOLCDistillConfig
from vfmkd_ray.heads.yolc.kd import detection_kd
from vfmkd_ray.losses.fgd import box_masks
from vfmkd_ray.models import from_run
from vfmkd_ray.models.build import build_model
from vfmkd_ray.models.multitask import FrozenModel
from vfmkd_ray.training.step import model_step, optimizer_step


def test_tiny_object_data_has_dense_clusters_of_small_boxes(yolc_config):
    write_synthetic_coco(yolc_config.data)
    dataset = read_dataset(yolc_config.data)
    assert [c["name"] for c in dataset.categories] == ["car", "person", "boat"]
    found = list(dataset.annotations.values())
    sides = [b[2] - b[0] for a in found for b in a.boxes]
    assert min(sides) >= 5 and max(sides) <= 10
    assert np.mean([len(a.boxes) for a in found]) >= 6
    assert {label for a in found for label in a.labels} == {0, 1, 2}


@pytest.mark.parametrize("hm_kd", ["mse", "kl"])
def test_kd_terms_vanish_for_an_identical_teacher_and_never_reach_it(yolc_config, hm_kd):
    head_cfg = yolc_config.heads["det"].model_copy(
        update={"lsm": yolc_config.heads["det"].lsm.model_copy(update={"score_threshold": 0.05})}
    )
    cfg = yolc_config.model_copy(update={"heads": {"det": head_cfg}})
    kd = YOLCDistillConfig(teacher_ckpt="unused", hm_kd=hm_kd, temperature=2.0)
    student = build_model(cfg).model.eval()  # BN on running stats, like the teacher
    teacher = FrozenModel(copy.deepcopy(student))
    batch = dataset_batch(cfg, 128, count=4)
    images = batch.images_BCHW
    out = student.head_output("det", images)
    terms = detection_kd(
        partial(student.head_output, "det"),
        partial(teacher.head_output, "det"),
        images,
        out,
        teacher.head_output("det", images),
        kd,
        head_cfg,
    )
    assert terms["kd/patches"] > 0, "the low threshold must produce crops, or the local term is untested"
    for name in ("kd", "kd/hm", "kd/coarse", "kd/refine"):
        assert float(terms[name]) == pytest.approx(0.0, abs=1e-7), name
    # A different student: every term is positive, and the teacher gets no gradient.
    other = build_model(cfg.model_copy(update={"seed": 1})).model
    out = other.head_output("det", images)
    terms = detection_kd(
        partial(other.head_output, "det"), partial(teacher.head_output, "det"), images, out,
        teacher.head_output("det", images), kd, head_cfg,
    )  # fmt: skip
    assert all(float(terms[k]) > 0 for k in ("kd/hm", "kd/coarse"))
    terms["kd"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in other.parameters())


def test_fgd_masks_weight_boxes_by_inverse_area():
    boxes = [torch.tensor([[0.0, 0.0, 16.0, 16.0]]), torch.zeros(0, 4)]
    foreground, background = box_masks(boxes, image_size=64, grid=(16, 16), device="cpu")
    assert foreground[0, :5, :5].eq(1 / 25).all() and foreground[0, 5:, :].eq(0).all()
    assert background[0].sum() == pytest.approx(1.0) and background[1].sum() == pytest.approx(1.0)


def test_short_training_lowers_the_loss_and_eval_scores_both_modes(yolc_config, tmp_path, capsys):
    cfg = yolc_config
    batch = dataset_batch(cfg, cfg.heads["det"].max_objects)
    parts = build_model(cfg)
    optimizer = torch.optim.AdamW(parts.model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    losses = []
    for step in range(16):
        pick = torch.arange(step * 4, step * 4 + 4) % len(batch)
        out = model_step(parts.model, take(batch, pick), parts)
        assert {"loss/det", "det/hm", "det/nwd_coarse", "det/crops"} <= set(out)
        optimizer_step(out["loss"], optimizer, scaler, list(parts.model.parameters()), 10.0)
        losses.append(float(out["loss"]))
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])

    run_dir = Path(cfg.train.storage_path, cfg.name)
    run_files.write_best(str(run_dir), parts.model, cfg.model_dump(mode="json"))
    reloaded, _ = from_run.load_model(str(run_dir / run_files.BEST_MODEL))
    torch.testing.assert_close(
        reloaded.model.heads["det"].head.refine_weight, parts.model.heads["det"].head.refine_weight
    )
    config_file = tmp_path / "det.yaml"
    config_file.write_text(dump_config(cfg))
    assert main(["eval", str(config_file), "--split", "all"]) == 0
    captured = capsys.readouterr()
    assert "16/16 images" in captured.err, "progress while evaluating"
    rows = [
        line
        for line in captured.out.splitlines()
        if line.startswith(("| det | whole", "| det | crop_refine"))
    ]
    assert len(rows) == 2
    saved = json.loads((run_dir / "eval.json").read_text())
    assert set(saved["heads"]["det"]) == {"whole", "crop_refine"}
    for figures in saved["heads"]["det"].values():
        assert set(figures) == {"mAP", "AP50", "AP_small"} and all(0 <= v <= 1 for v in figures.values())
    assert saved["num_images"] == 16 and saved["losses"]["det"] > 0
