"""Supervised detection losses: Gaussian focal loss on the heatmap, and a normalised Wasserstein
(NWD) loss plus L1 on the coarse and refined boxes at object centers.

NWD models each box as a 2-D Gaussian; for axis-aligned boxes the squared 2-Wasserstein distance is
``|c1 - c2|^2 + ((w1 - w2)^2 + (h1 - h2)^2) / 4``, and ``exp(-sqrt(W2) / C)`` is a similarity that,
unlike IoU, stays informative for tiny boxes that do not overlap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkd_ray.heads.yolc.boxes import decode
from vfmkd_ray.heads.yolc.config import YOLCHeadConfig
from vfmkd_ray.heads.yolc.module import DetectorOutput
from vfmkd_ray.heads.yolc.targets import DetectionTargets

FOCAL_ALPHA, FOCAL_BETA = 2.0, 4.0


def gaussian_focal_loss(logits_BKHW: torch.Tensor, target_BKHW: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of objects."""
    prob = torch.sigmoid(logits_BKHW.float()).clamp(1e-4, 1 - 1e-4)
    positive = target_BKHW.eq(1).float()
    pos_loss = -torch.log(prob) * (1 - prob) ** FOCAL_ALPHA * positive
    neg_loss = -torch.log(1 - prob) * prob**FOCAL_ALPHA * (1 - target_BKHW) ** FOCAL_BETA * (1 - positive)
    return (pos_loss.sum() + neg_loss.sum()) / positive.sum().clamp_min(1.0)


def wasserstein_distance(boxes_a_N4: torch.Tensor, boxes_b_N4: torch.Tensor) -> torch.Tensor:
    """2-Wasserstein distance between the Gaussians of two sets of ``x1, y1, x2, y2`` boxes."""
    center = ((boxes_a_N4[:, :2] + boxes_a_N4[:, 2:]) - (boxes_b_N4[:, :2] + boxes_b_N4[:, 2:])) / 2
    size = (boxes_a_N4[:, 2:] - boxes_a_N4[:, :2]) - (boxes_b_N4[:, 2:] - boxes_b_N4[:, :2])
    return (center.pow(2).sum(dim=1) + size.pow(2).sum(dim=1) / 4).clamp_min(1e-7).sqrt()


def nwd_loss(pred_N4: torch.Tensor, target_N4: torch.Tensor, constant: float) -> torch.Tensor:
    if not len(pred_N4):
        return pred_N4.sum() * 0
    return (1 - torch.exp(-wasserstein_distance(pred_N4, target_N4) / constant)).mean()


def detection_loss(
    out: DetectorOutput, targets: DetectionTargets, cfg: YOLCHeadConfig, stride: int
) -> dict[str, torch.Tensor]:
    """``{"loss", "loss/hm", "loss/nwd_coarse", "loss/nwd_refined", "loss/l1"}``."""
    positive = targets.positive_B1HW[:, 0].bool()
    gt_boxes = targets.gt_boxes_B4HW.permute(0, 2, 3, 1)[positive]
    gt_codes = targets.boxes_B4HW.permute(0, 2, 3, 1)[positive]
    terms = {"hm": gaussian_focal_loss(out.heatmap_BKHW, targets.heatmap_BKHW)}
    l1 = out.heatmap_BKHW.new_zeros(())
    for name, box_map in (("coarse", out.coarse_B4HW), ("refined", out.refined_B4HW)):
        boxes = decode(box_map.float(), stride).permute(0, 2, 3, 1)[positive]
        terms[f"nwd_{name}"] = nwd_loss(boxes, gt_boxes, cfg.nwd_constant)
        codes = box_map.float().permute(0, 2, 3, 1)[positive]
        l1 = l1 + (F.l1_loss(codes, gt_codes) if len(codes) else codes.sum() * 0)
    terms["l1"] = l1
    total = cfg.hm_weight * terms["hm"] + cfg.box_weight * (terms["nwd_coarse"] + terms["nwd_refined"])
    total = total + cfg.l1_weight * terms["l1"]
    return {"loss": total, **{f"loss/{k}": v.detach() for k, v in terms.items()}}
