"""What ``vfmkd export`` writes, loaded into the real MMYOLO / mmpretrain classes with
``strict=True`` and compared output for output: the YOLOv8 backbone at every size, the whole
YOLOv8 detector (backbone + YOLOv8PAFPN + YOLOv8Head) built from MMYOLO's packaged config of the
same size, and a timm student through mmpretrain's ``TIMMBackbone``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests.batches import dataset_batch
from tests.mm.real_classes import build_backbone, build_detector, config_of, randomise, strict_load
from vfmkd_ray import run_files
from vfmkd_ray.config import validate_config
from vfmkd_ray.handoff.command import run_export
from vfmkd_ray.handoff.mmyolo_detector import export_whole_detector, mmyolo_state
from vfmkd_ray.models.build import build_model
from vfmkd_ray.models.students import StudentConfig, build_student
from vfmkd_ray.training.config import TrainConfig
from vfmkd_ray.training.optim import gradient_scale
from vfmkd_ray.training.step import model_step

pytestmark = pytest.mark.mm
SIZES = ("n", "s", "m", "l", "x")
CONFIGS = Path(__file__).parents[2] / "configs"
SIDE = 128


def _images(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def _close(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", SIZES)
def test_yolov8_backbone_export_loads_strictly_into_mmyolo_yolov8cspdarknet(size, tmp_path):
    cfg = StudentConfig(name="yolov8_cspdarknet", size=size)
    student = randomise(build_student(cfg), seed=1).eval()
    source = tmp_path / "student.pth"
    torch.save(student.state_dict(), source)
    result = run_export(str(source), "mmyolo", str(tmp_path / f"yolov8{size}.pth"), cfg)
    state = torch.load(result.files[0], weights_only=True)["state_dict"]

    real = build_backbone(config_of(result.files[1]).model.backbone)
    assert type(real).__module__ == "mmyolo.models.backbones.csp_darknet"
    assert strict_load(real, state, "backbone.") == ([], [])
    loaded_by_init_cfg = build_backbone(config_of(result.files[1]).model.backbone)
    loaded_by_init_cfg.init_weights()  # the snippet's init_cfg: Pretrained, prefix backbone.

    images = _images()
    with torch.no_grad():
        ours = student(images)[-3:]  # the snippet asks for out_indices (2, 3, 4): strides 8-32
        for theirs in (real, loaded_by_init_cfg):
            theirs.eval()  # MMYOLO's backbones return None from train(): no chaining
            _close(ours, theirs(images))


def _detector_config(size: str) -> dict:
    raw = yaml.safe_load((CONFIGS / "multitask.yaml").read_text())
    raw["student"]["size"] = size
    raw["heads"] = {"det": raw["heads"]["det"]}
    return raw


@pytest.mark.parametrize("size", SIZES)
def test_whole_detector_export_loads_strictly_into_mmyolo_yolodetector(size, tmp_path):
    cfg = validate_config(_detector_config(size))
    parts = build_model(cfg, load_weights=False)
    model = randomise(parts.model, seed=2).eval()
    run_dir = str(tmp_path / "run")
    best = run_files.write_best(run_dir, model, cfg.model_dump(mode="json"))[run_files.BEST_MODEL]
    export = export_whole_detector(best, str(tmp_path / f"yolov8{size}_detector.pth"))
    state = torch.load(export.files[0], weights_only=True)["state_dict"]

    snippet = config_of(export.files[1])
    assert snippet.model.backbone.widen_factor == {"n": 0.25, "s": 0.5, "m": 0.75, "l": 1.0, "x": 1.25}[size]
    detector = build_detector(snippet.model)
    assert type(detector).__name__ == "YOLODetector"
    assert strict_load(detector, state, "") == ([], [])
    from mmengine.runner import load_checkpoint

    reloaded = build_detector(snippet.model)
    load_checkpoint(reloaded, export.files[0], map_location="cpu", strict=True)  # what load_from runs

    images = _images(1)
    with torch.no_grad():
        backbone = model.backbone(images)
        ours = model.heads["det"].head_module(model.neck(backbone))  # the HeadOutput
        for real in (detector, reloaded):
            real.eval()
            cls_scores, bbox_preds = real(images, mode="tensor")
            _close(ours.cls_logits, cls_scores)
            _close(ours.bbox_dists, bbox_preds)


@pytest.mark.parametrize("name", ["timm/repvit_m0_9", "timm/mambaout_femto"])
def test_mmdet_export_of_a_timm_student_loads_through_mmpretrain_timmbackbone(name, tmp_path):
    cfg = StudentConfig(name=name)
    student = randomise(build_student(cfg), seed=3).eval()
    source = tmp_path / "student.pth"
    torch.save(student.state_dict(), source)
    result = run_export(str(source), "mmdet", str(tmp_path / "timm_backbone.pth"), cfg)
    state = torch.load(result.files[0], weights_only=True)["state_dict"]

    backbone_cfg = config_of(result.files[1]).model.backbone
    assert backbone_cfg.type == "mmpretrain.TIMMBackbone"
    real = build_backbone(backbone_cfg)
    assert type(real).__name__ == "TIMMBackbone"
    assert strict_load(real, state, "backbone.") == ([], [])
    loaded_by_init_cfg = build_backbone(backbone_cfg)
    loaded_by_init_cfg.init_weights()

    images = _images(2)
    with torch.no_grad():
        ours = student(images)[-3:]
        for module in (real, loaded_by_init_cfg):
            module.eval()
            # TIMMBackbone returns timm's features as they are: channels-last for MambaOut.
            theirs = [t.permute(0, 3, 1, 2) if student.channels_last_output else t for t in module(images)]
            _close(ours, theirs)


def test_yolov8_loss_and_gradients_equal_mmyolos_at_the_sgd_scale(tmp_path):
    """The same weights and batch through our head's loss (x the global batch, what an sgd step
    backpropagates: ``optim.gradient_scale``) and MMYOLO's ``YOLOv8Head.loss_by_feat``: equal
    losses and equal gradients in every parameter (the recipe parity benchmark's premise)."""
    raw = _detector_config("n")
    del raw["teachers"], raw["distill"]  # the detector alone: no KD term in the loss
    raw["data"] |= {"root": str(tmp_path / "data"), "input_size": 128}
    raw["data"]["synthetic"] = {"num_images": 6, "image_size": 128, "seed": 3, "max_shapes": 4}
    cfg = validate_config(raw)
    parts = build_model(cfg, load_weights=False)
    model = randomise(parts.model, seed=4).train()
    best = run_files.write_best(str(tmp_path / "run"), model, cfg.model_dump(mode="json"))[
        run_files.BEST_MODEL
    ]
    export = export_whole_detector(best, str(tmp_path / "detector.pth"))
    detector = build_detector(config_of(export.files[1]).model)
    assert strict_load(detector, torch.load(export.files[0], weights_only=True)["state_dict"], "") == ([], [])
    detector.train()
    batch = dataset_batch(cfg, max_objects=20)
    images = len(batch)

    ours = model_step(model, batch, parts)
    (ours["loss"] * gradient_scale(TrainConfig(optimizer="sgd"), images)).backward()
    rows = [
        [b, float(label), *box.tolist()]
        for b in range(images)
        for box, label in zip(batch.boxes_BN4[b], batch.labels_BN[b], strict=True)
        if label >= 0
    ]
    outputs = detector.bbox_head(detector.neck(detector.backbone(batch.images_BCHW)))
    metas = [{"batch_input_shape": tuple(batch.images_BCHW.shape[2:])}] * images
    theirs = detector.bbox_head.loss_by_feat(*outputs, torch.tensor(rows), metas)
    for name, key in (("det/cls", "loss_cls"), ("det/bbox", "loss_bbox"), ("det/dfl", "loss_dfl")):
        torch.testing.assert_close(ours[name] * images, theirs[key].detach(), rtol=1e-4, atol=1e-4)
    sum(theirs.values()).backward()

    ours_grads = mmyolo_state({k: p.grad for k, p in model.named_parameters() if p.grad is not None}, "det")
    theirs_grads = {k: p.grad for k, p in detector.named_parameters()}
    assert ours_grads.keys() == theirs_grads.keys()
    for key, grad in theirs_grads.items():
        torch.testing.assert_close(ours_grads[key], grad, rtol=1e-3, atol=1e-5, msg=key)
