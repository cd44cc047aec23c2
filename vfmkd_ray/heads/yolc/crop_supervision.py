"""The supervised loss on zoomed crops of the ground-truth clusters, so the local pass learns objects
at the zoom it meets them: LSM on the target heatmap picks the crops, the boxes whose center lies in
a crop move into patch coordinates, and the head runs again on the patches."""

from __future__ import annotations

import torch

from vfmkd_ray.heads.base import Rerun
from vfmkd_ray.heads.yolc.boxes import to_patch
from vfmkd_ray.heads.yolc.config import YOLCHeadConfig
from vfmkd_ray.heads.yolc.crops import crop_and_zoom
from vfmkd_ray.heads.yolc.losses import detection_loss
from vfmkd_ray.heads.yolc.lsm import find_clusters
from vfmkd_ray.heads.yolc.module import STRIDE
from vfmkd_ray.heads.yolc.targets import DetectionTargets, build_targets


def crop_supervision(
    rerun: Rerun,
    images_BCHW: torch.Tensor,
    boxes_BN4: torch.Tensor,
    labels_BN: torch.Tensor,
    targets: DetectionTargets,
    cfg: YOLCHeadConfig,
) -> torch.Tensor | None:
    """The loss on the ground-truth cluster crops, or None when no image has a cluster."""
    image_hw = tuple(images_BCHW.shape[-2:])
    crops = [
        find_clusters(heatmap, image_hw, STRIDE, cfg.lsm, cfg.max_patches_per_img, cfg.min_patch_size)
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
    out = rerun(patches)
    patch_targets = build_targets(
        patch_boxes, patch_labels, cfg.num_classes, tuple(out.heatmap_BKHW.shape[-2:]), STRIDE
    )
    return detection_loss(out, patch_targets, cfg, STRIDE)["loss"]
