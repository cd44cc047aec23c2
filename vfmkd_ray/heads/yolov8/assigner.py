"""The batch task-aligned assigner of YOLOv8 (TOOD), as MMYOLO 0.6.0 implements it with CIoU.

Follows ``mmyolo/models/task_modules/assigners/batch_task_aligned_assigner.py`` and ``utils.py``
(themselves after YOLOv6's ``tal_assigner.py``; Feng et al., "TOOD: Task-aligned One-stage Object
Detection", ICCV 2021):

1. alignment metric ``t = s^alpha * u^beta`` between every prior and every ground-truth box, with
   ``s`` the predicted score of the box's class and ``u`` the (clamped) CIoU of the predicted box;
2. per box, the ``topk`` priors by ``t`` among those whose centre lies strictly inside it;
3. a prior claimed by several boxes goes to the one its predicted box overlaps most;
4. the target score of a positive is one-hot in its box's class, scaled by ``t / max t`` of that box
   times the box's best overlap (so the best prior of a box gets its IoU as soft target).

Legend: B images, G ground-truth boxes per image (padded), P priors, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vfmkd_ray.heads.yolov8.box_ops import ciou

# ``select_candidates_in_gts``' fixed margin: a prior on a box's edge is not inside it.
INSIDE_EPS = 1e-9


@dataclass
class Assignment:
    """Per prior: the target of the losses.

    Attributes:
        labels_BP: class of the assigned box, ``num_classes`` for negatives.
        boxes_BP4: the assigned box, ``x1, y1, x2, y2`` in input pixels; meaningful only where
            ``fg_mask_BP`` (MMYOLO leaves box 0 of the image there).
        scores_BPK: soft class targets (0 for negatives).
        fg_mask_BP: True for positives.
    """

    labels_BP: torch.Tensor
    boxes_BP4: torch.Tensor
    scores_BPK: torch.Tensor
    fg_mask_BP: torch.Tensor


def _inside_gts(priors_P2: torch.Tensor, gt_boxes_BG4: torch.Tensor) -> torch.Tensor:
    """``B x G x P`` 1.0 where the prior lies strictly inside the box."""
    points = priors_P2[None, None]  # 1 x 1 x P x 2
    boxes = gt_boxes_BG4[:, :, None]  # B x G x 1 x 4
    deltas = torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)
    return (deltas.min(dim=-1).values > INSIDE_EPS).to(gt_boxes_BG4.dtype)


def _topk_mask(metrics_BGP: torch.Tensor, valid_BG1: torch.Tensor, topk: int) -> torch.Tensor:
    """``B x G x P`` 1.0 on each box's ``topk`` priors by metric (none for padding boxes)."""
    num_priors = metrics_BGP.shape[-1]
    _, topk_idxs = torch.topk(metrics_BGP, min(topk, num_priors), dim=-1)
    # Padding boxes point every slot at prior 0; the count > 1 below then drops them, as in MMYOLO.
    topk_idxs = torch.where(valid_BG1.bool(), topk_idxs, torch.zeros_like(topk_idxs))
    counts = F.one_hot(topk_idxs, num_priors).sum(dim=-2)
    return torch.where(counts > 1, torch.zeros_like(counts), counts).to(metrics_BGP.dtype)


def _resolve_multiple(pos_BGP: torch.Tensor, overlaps_BGP: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """MMYOLO's ``select_highest_overlaps``: one box per prior, the best-overlapping one.

    Returns:
        The box index per prior (``B x P``), the positive count per prior and the new mask.
    """
    num_gt = pos_BGP.shape[1]
    fg_BP = pos_BGP.sum(dim=-2)
    if fg_BP.max() > 1:
        multiple_BGP = (fg_BP[:, None] > 1).expand(-1, num_gt, -1)
        best_BGP = F.one_hot(overlaps_BGP.argmax(dim=1), num_gt).permute(0, 2, 1).to(overlaps_BGP.dtype)
        pos_BGP = torch.where(multiple_BGP, best_BGP, pos_BGP)
        fg_BP = pos_BGP.sum(dim=-2)
    return pos_BGP.argmax(dim=-2), fg_BP, pos_BGP


@torch.no_grad()
def assign(
    pred_boxes_BP4: torch.Tensor,
    pred_scores_BPK: torch.Tensor,
    priors_P2: torch.Tensor,
    gt_labels_BG: torch.Tensor,
    gt_boxes_BG4: torch.Tensor,
    valid_BG: torch.Tensor,
    *,
    topk: int,
    alpha: float,
    beta: float,
    eps: float,
) -> Assignment:
    """Task-aligned assignment of a batch.

    Args:
        pred_boxes_BP4: decoded predicted boxes, input pixels.
        pred_scores_BPK: predicted class probabilities (after sigmoid).
        priors_P2: prior points, input pixels.
        gt_labels_BG: class of each ground-truth box (any value on padding rows).
        gt_boxes_BG4: ground-truth boxes ``x1, y1, x2, y2`` in input pixels (0 on padding rows).
        valid_BG: True for real boxes, False for padding.
        topk: candidates per box.
        alpha: exponent of the class score in the metric.
        beta: exponent of the IoU in the metric.
        eps: keeps the metric normalisation finite.

    Returns:
        The ``Assignment`` (no positives when G is 0).
    """
    batch_size, _, num_classes = pred_scores_BPK.shape
    num_gt = gt_boxes_BG4.shape[1]
    if num_gt == 0:
        return _no_positives(pred_scores_BPK, gt_boxes_BG4)
    valid_BG1 = valid_BG[..., None].to(gt_boxes_BG4.dtype)
    labels_BG = torch.where(valid_BG, gt_labels_BG.long(), torch.zeros_like(gt_labels_BG, dtype=torch.long))

    # 1. Metric: score of the box's class times CIoU, B x G x P.
    batch_idx = torch.arange(batch_size, device=labels_BG.device)[:, None].expand(-1, num_gt)
    box_scores_BGP = pred_scores_BPK.permute(0, 2, 1)[batch_idx, labels_BG]
    overlaps_BGP = ciou(pred_boxes_BP4[:, None], gt_boxes_BG4[:, :, None]).clamp(0)
    metrics_BGP = box_scores_BGP.pow(alpha) * overlaps_BGP.pow(beta)

    # 2. Top-k candidates among the priors inside each real box.
    inside_BGP = _inside_gts(priors_P2, gt_boxes_BG4)
    topk_BGP = _topk_mask(metrics_BGP * inside_BGP, valid_BG1, topk)
    pos_BGP = topk_BGP * inside_BGP * valid_BG1

    # 3. One box per prior.
    gt_idx_BP, fg_BP, pos_BGP = _resolve_multiple(pos_BGP, overlaps_BGP)
    fg_mask_BP = fg_BP > 0

    # Targets of the assigned box (the box of index 0 where there is none; masked below).
    labels_BP = labels_BG.gather(1, gt_idx_BP)
    boxes_BP4 = gt_boxes_BG4.gather(1, gt_idx_BP[..., None].expand(-1, -1, 4))
    scores_BPK = F.one_hot(labels_BP, num_classes).to(gt_boxes_BG4.dtype) * fg_mask_BP[..., None]
    labels_BP = torch.where(fg_mask_BP, labels_BP, torch.full_like(labels_BP, num_classes))

    # 4. Soft targets.
    norm_BP = _normalized_metric(metrics_BGP * pos_BGP, overlaps_BGP * pos_BGP, eps)
    return Assignment(labels_BP, boxes_BP4, scores_BPK * norm_BP[..., None], fg_mask_BP)


def _no_positives(pred_scores_BPK: torch.Tensor, gt_boxes_BG4: torch.Tensor) -> Assignment:
    batch_size, num_priors, num_classes = pred_scores_BPK.shape
    return Assignment(
        labels_BP=torch.full((batch_size, num_priors), num_classes, device=gt_boxes_BG4.device),
        boxes_BP4=gt_boxes_BG4.new_zeros((batch_size, num_priors, 4)),
        scores_BPK=gt_boxes_BG4.new_zeros((batch_size, num_priors, num_classes)),
        fg_mask_BP=torch.zeros(batch_size, num_priors, dtype=torch.bool, device=gt_boxes_BG4.device),
    )


def _normalized_metric(metrics_BGP: torch.Tensor, overlaps_BGP: torch.Tensor, eps: float) -> torch.Tensor:
    """Per prior ``t / max t`` of its box times the box's best overlap (both over the box's positives;
    the inputs are already masked to them), the largest over boxes: ``B x P``."""
    max_metric_BG1 = metrics_BGP.amax(dim=-1, keepdim=True)
    max_overlap_BG1 = overlaps_BGP.amax(dim=-1, keepdim=True)
    return (metrics_BGP * max_overlap_BG1 / (max_metric_BG1 + eps)).amax(dim=-2)
