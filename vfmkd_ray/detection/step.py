"""The Ray-free detection step: supervised loss, plus the YOLC KD terms and registered feature-KD
terms (FGD) against a frozen teacher detector when distillation is on.

``DetectionDistiller`` is what DDP wraps: the student detector and the feature-KD adapters.
"""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.detection.boxes import to_patch
from vfmkd_ray.detection.config import DetectionConfig
from vfmkd_ray.detection.crops import crop_and_zoom
from vfmkd_ray.detection.kd import detection_kd
from vfmkd_ray.detection.losses import detection_loss
from vfmkd_ray.detection.lsm import find_clusters
from vfmkd_ray.detection.model import DetectorOutput, YOLCDetector
from vfmkd_ray.detection.targets import build_targets
from vfmkd_ray.losses.base import KDBatch, LossTerm
from vfmkd_ray.losses.config import DistillConfig
from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel

TEACHER_NECK = "detector/neck"  # the teacher feature feature-KD terms read


class DetectionDistiller(nn.Module):
    def __init__(self, detector: YOLCDetector, feature_terms: dict[str, LossTerm]):
        super().__init__()
        self.detector = detector
        self.adapters = nn.ModuleDict({name: term.build_adapter() for name, term in feature_terms.items()})
        self.stride = detector.stride

    def forward(self, images_BCHW: torch.Tensor) -> DetectorOutput:
        return self.detector(images_BCHW)


def neck_info(cfg: DetectionConfig) -> FeatureInfo:
    """The detector's neck as the one level feature-KD terms see (stride 4)."""
    return FeatureInfo([FeatureLevel(cfg.neck_channels, 4, "neck")])


def _crop_supervision(
    detector: nn.Module,
    images_BCHW: torch.Tensor,
    boxes_BN4: torch.Tensor,
    labels_BN: torch.Tensor,
    targets,
    cfg: DetectionConfig,
    distill: DistillConfig,
) -> torch.Tensor | None:
    """The supervised loss on zoomed crops of the ground-truth clusters (LSM on the target heatmap),
    with the boxes whose center lies in a crop moved into patch coordinates."""
    image_hw = tuple(images_BCHW.shape[-2:])
    crops = [
        find_clusters(
            heatmap, image_hw, detector.stride, cfg.lsm, distill.max_patches_per_img, distill.min_patch_size
        )
        for heatmap in targets.heatmap_BKHW
    ]
    patches, metas = crop_and_zoom(images_BCHW, crops, cfg.lsm.zoom, cfg.patch_size)
    if not metas:
        return None
    patch_boxes = torch.zeros(len(metas), boxes_BN4.shape[1], 4, device=boxes_BN4.device)
    patch_labels = torch.full(
        (len(metas), boxes_BN4.shape[1]), -1, dtype=labels_BN.dtype, device=labels_BN.device
    )
    for k, meta in enumerate(metas):
        moved = to_patch(boxes_BN4[meta.image_index].float(), meta)
        centers = (moved[:, :2] + moved[:, 2:]) / 2
        inside = (labels_BN[meta.image_index] >= 0) & (centers >= 0).all(dim=1)
        inside &= (centers[:, 0] < meta.width) & (centers[:, 1] < meta.height)
        patch_boxes[k] = moved
        patch_labels[k] = torch.where(inside, labels_BN[meta.image_index], -1)
    out = detector(patches)
    targets = build_targets(
        patch_boxes, patch_labels, cfg.num_classes, tuple(out.heatmap_BKHW.shape[-2:]), detector.stride
    )
    return detection_loss(out, targets, cfg, detector.stride)["loss"]


def detection_step(
    model: nn.Module,
    images_BCHW: torch.Tensor,
    boxes_BN4: torch.Tensor,
    labels_BN: torch.Tensor,
    cfg: DetectionConfig,
    distill: DistillConfig,
    teacher: nn.Module | None = None,
    feature_terms: dict[str, LossTerm] | None = None,
) -> dict[str, torch.Tensor]:
    """``{"loss", "loss/<part>", "kd/<term>", ...}``; only ``loss`` carries gradients."""
    inner = model.module if hasattr(model, "module") else model  # DDP: second passes skip the wrapper
    out = model(images_BCHW)
    stride = inner.stride
    targets = build_targets(boxes_BN4, labels_BN, cfg.num_classes, tuple(out.heatmap_BKHW.shape[-2:]), stride)
    result = detection_loss(out, targets, cfg, stride)
    if cfg.crop_loss_weight > 0:
        crop_loss = _crop_supervision(inner, images_BCHW, boxes_BN4, labels_BN, targets, cfg, distill)
        if crop_loss is not None:
            result["loss"] = result["loss"] + cfg.crop_loss_weight * crop_loss
            result["loss/crops"] = crop_loss.detach()
    if teacher is None:
        return result
    teacher_out = teacher(images_BCHW)
    kd = detection_kd(inner, teacher, images_BCHW, out, teacher_out, distill, cfg)
    total = result["loss"] + kd.pop("kd")
    boxes = [b[labels >= 0] for b, labels in zip(boxes_BN4, labels_BN, strict=True)]
    kd_batch = KDBatch(images_BCHW, torch.zeros(0), {TEACHER_NECK: teacher_out.neck_BCHW}, boxes=boxes)
    for name, term in (feature_terms or {}).items():
        value, diagnostics = term(inner.adapters[name](out.neck_BCHW), kd_batch)
        total = total + term.weight * value
        kd[f"kd/{name}"] = value.detach()
        kd.update({f"kd/{name}/{k}": v for k, v in diagnostics.items()})
    return {**result, **kd, "loss": total}
