"""Inference: a whole-image pass, LSM crops from the student's own heatmap (a deployed model has no
teacher), a pass over the zoomed crops, remap to image coordinates, and fusion: whole-image boxes
that lie inside a crop are replaced by the crop's boxes, then a class-aware NMS."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkd_ray.heads.base import Detections, Rerun
from vfmkd_ray.heads.yolc.boxes import decode, remap
from vfmkd_ray.heads.yolc.config import YOLCHeadConfig
from vfmkd_ray.heads.yolc.crops import crop_and_zoom
from vfmkd_ray.heads.yolc.lsm import Crop, find_clusters
from vfmkd_ray.heads.yolc.module import STRIDE, DetectorOutput


def peaks(out: DetectorOutput, cfg: YOLCHeadConfig) -> list[Detections]:
    """Per image: heatmap local maxima (3 x 3) above the score threshold, boxed by the refined map."""
    probs = torch.sigmoid(out.heatmap_BKHW.float())
    keep = probs == F.max_pool2d(probs, 3, stride=1, padding=1)
    probs = probs * keep
    boxes = decode(out.refined_B4HW.float(), STRIDE)
    batch, classes, height, width = probs.shape
    results = []
    for b in range(batch):
        scores, index = probs[b].flatten().topk(min(cfg.max_detections, classes * height * width))
        chosen = scores > cfg.score_threshold
        scores, index = scores[chosen], index[chosen]
        labels, cell = index // (height * width), index % (height * width)
        results.append(Detections(boxes[b].flatten(1)[:, cell].T, scores, labels))
    return results


def fuse(whole: Detections, crops: list[Crop], from_crops: Detections, iou: float, limit: int) -> Detections:
    """Whole-image boxes inside any crop give way to the crop boxes; then class-aware NMS."""
    inside = torch.zeros(len(whole.boxes), dtype=torch.bool, device=whole.boxes.device)
    for x1, y1, x2, y2 in crops:
        b = whole.boxes
        inside |= (b[:, 0] >= x1) & (b[:, 1] >= y1) & (b[:, 2] <= x2) & (b[:, 3] <= y2)
    kept = Detections(whole.boxes[~inside], whole.scores[~inside], whole.labels[~inside])
    merged = Detections.cat([kept, from_crops])
    from torchvision.ops import batched_nms  # as in heads.yolov8.head: not at import

    order = batched_nms(merged.boxes, merged.scores, merged.labels, iou)[:limit]
    return Detections(merged.boxes[order], merged.scores[order], merged.labels[order])


@torch.no_grad()
def detect(
    out: DetectorOutput, images_BCHW: torch.Tensor, rerun: Rerun, cfg: YOLCHeadConfig, refine_crops: bool
) -> list[Detections]:
    """Detections per image from the whole-image output ``out``; with ``refine_crops``, the crops of
    the student's own heatmap are run again through ``rerun`` and fused."""
    whole = peaks(out, cfg)
    if not refine_crops:
        return whole
    image_hw = tuple(images_BCHW.shape[-2:])
    probs = torch.sigmoid(out.heatmap_BKHW.float())
    crops = [
        find_clusters(p, image_hw, STRIDE, cfg.lsm, cfg.max_patches_per_img, cfg.min_patch_size)
        for p in probs
    ]
    patches, metas = crop_and_zoom(images_BCHW, crops, cfg.lsm.zoom, cfg.patch_size)
    per_image: list[list[Detections]] = [[] for _ in range(len(images_BCHW))]
    if metas:
        for meta, found in zip(metas, peaks(rerun(patches), cfg), strict=True):
            # Not on the zero canvas around the resized crop.
            inside = (found.boxes[:, 0] < meta.width) & (found.boxes[:, 1] < meta.height)
            per_image[meta.image_index].append(
                Detections(remap(found.boxes[inside], meta), found.scores[inside], found.labels[inside])
            )
    empty = Detections.empty(images_BCHW.device)
    return [
        fuse(whole[b], crops[b], Detections.cat(per_image[b] or [empty]), cfg.nms_iou, cfg.max_detections)
        for b in range(len(images_BCHW))
    ]
