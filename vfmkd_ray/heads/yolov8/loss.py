"""The YOLOv8 detection loss, as MMYOLO 0.6.0's ``YOLOv8Head.loss_by_feat`` computes it.

Follows ``mmyolo/models/dense_heads/yolov8_head.py`` with the losses of
``configs/yolov8/yolov8_s_syncbn_fast_8xb16-500e_coco.py``:

- priors at the cell centres of every level; predicted distances (the expectation of each side's
  distribution, in stride units) decoded into boxes in input pixels;
- ``assigner.assign`` (task-aligned, CIoU) on the detached predictions;
- class: sigmoid BCE against the soft assigned scores, summed, divided by the sum of the assigned
  scores (at least 1), times ``loss_cls_weight`` (mmdet ``CrossEntropyLoss(use_sigmoid=True)``);
- box: ``1 - CIoU`` of the positives (boxes in stride units), weighted by each positive's assigned
  score, summed, divided by the same sum, times ``loss_bbox_weight`` (MMYOLO ``IoULoss``);
- DFL on the positives' four sides, targets clamped to ``reg_max - 1 - 0.01``, same weights, divided
  by the same sum, times ``loss_dfl_weight`` (mmdet ``DistributionFocalLoss``: Li et al.,
  "Generalized Focal Loss", NeurIPS 2020).

One deliberate difference: MMYOLO multiplies the three losses by ``num_imgs * world_size`` to match
the official implementation's batch-summed loss under its SGD recipe. Here they are not, so the
head's loss does not grow with the batch size or the number of workers, and ``heads.<name>.weight``
and the KD term weights keep their meaning at any batch size. Under ``train.optimizer: sgd`` the
step multiplies the whole loss by the global batch (``training.optim.gradient_scale``), so MMYOLO's
SGD settings act on the same batch-summed gradient as there.

Everything runs in float32, also under autocast. The expected distances are recomputed here in
float32 from the distribution logits (the same formula as the head module's). Rows with label -1
are padding, not ground truth. Without any positive the box and DFL losses are an exact 0 that still
reaches every box-branch parameter.

Legend: B images, N ground-truth rows per image (padded), G real boxes per image after packing,
P priors of all levels, K classes, R ``reg_max`` bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vfmkd_ray.heads.yolov8.assigner import Assignment, assign
from vfmkd_ray.heads.yolov8.box_ops import box_to_distance, ciou, distance_to_box, grid_priors
from vfmkd_ray.heads.yolov8.config import YOLOv8HeadConfig
from vfmkd_ray.heads.yolov8.head_module import HeadOutput

DFL_TARGET_EPS = 0.01  # DistancePointBBoxCoder.encode(eps=0.01): the upper bin stays in range
# mmdet's weight_reduce_loss divides by (avg_factor + this) for reduction="mean".
AVG_FACTOR_EPS = torch.finfo(torch.float32).eps


def distribution_focal_loss(logits_NR: torch.Tensor, target_N: torch.Tensor) -> torch.Tensor:
    """DFL per element: cross-entropy towards the two bins around the continuous target, each weighted
    by its closeness, ``CE(floor t) * (floor t + 1 - t) + CE(floor t + 1) * (t - floor t)``.

    Args:
        logits_NR: logits over the R bins.
        target_N: continuous targets in ``[0, R - 1)``.

    Returns:
        ``N`` losses.
    """
    left = target_N.long()
    right = left + 1
    weight_left = right.float() - target_N
    weight_right = target_N - left.float()
    return (
        F.cross_entropy(logits_NR, left, reduction="none") * weight_left
        + F.cross_entropy(logits_NR, right, reduction="none") * weight_right
    )


def pack_ground_truth(
    boxes_BN4: torch.Tensor, labels_BN: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real boxes first and padding trimmed to the most boxes of any image (MMYOLO's
    ``gt_instances_preprocess``): padding rows become zero boxes with a False valid flag.

    Returns:
        ``boxes_BG4``, ``labels_BG`` and ``valid_BG``.
    """
    valid_BN = labels_BN >= 0
    # A stable sort keeps the real boxes in their order (the assigner's tie-breaks depend on it).
    order_BN = torch.sort((~valid_BN).to(torch.uint8), dim=1, stable=True).indices
    num_gt = int(valid_BN.sum(dim=1).max()) if valid_BN.numel() else 0
    order_BG = order_BN[:, :num_gt]
    valid_BG = valid_BN.gather(1, order_BG)
    boxes_BG4 = boxes_BN4.float().gather(1, order_BG[..., None].expand(-1, -1, 4)) * valid_BG[..., None]
    labels_BG = torch.where(valid_BG, labels_BN.gather(1, order_BG), torch.zeros_like(order_BG))
    return boxes_BG4, labels_BG, valid_BG


def flatten_levels(output: HeadOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 ``B x P x K`` class logits and ``B x P x 4 x R`` distance logits of all levels."""
    cls_BPK = torch.cat([c.permute(0, 2, 3, 1).flatten(1, 2) for c in output.cls_logits], dim=1)
    logits_BP4R = torch.cat(list(output.dist_logits), dim=1)
    return cls_BPK.float(), logits_BP4R.float()


def expected_distance(logits_BP4R: torch.Tensor) -> torch.Tensor:
    """``B x P x 4`` expectation of each side's distribution, in stride units."""
    bins_R = torch.arange(logits_BP4R.shape[-1], device=logits_BP4R.device, dtype=logits_BP4R.dtype)
    return logits_BP4R.softmax(dim=-1).matmul(bins_R)


def yolov8_loss(
    output: HeadOutput,
    gt_boxes_BN4: torch.Tensor,
    gt_labels_BN: torch.Tensor,
    strides: Sequence[int],
    cfg: YOLOv8HeadConfig,
) -> dict[str, torch.Tensor]:
    """The YOLOv8 loss of a batch.

    Args:
        output: the head module's output.
        gt_boxes_BN4: ground-truth ``x1, y1, x2, y2`` in input pixels.
        gt_labels_BN: 0-based classes, -1 on padding rows.
        strides: stride of each level of ``output``.
        cfg: loss weights and assigner settings.

    Returns:
        ``{"loss", "cls", "bbox", "dfl", "num_pos"}``: the weighted total (the only entry with a
        gradient), the three weighted parts and the number of positive priors.
    """
    device = output.cls_logits[0].device
    with torch.autocast(device_type=device.type, enabled=False):
        cls_BPK, logits_BP4R = flatten_levels(output)
        priors_P3 = grid_priors([tuple(c.shape[-2:]) for c in output.cls_logits], strides, device)
        points_P2, stride_P1 = priors_P3[:, :2], priors_P3[:, 2:]
        pred_boxes_BP4 = distance_to_box(points_P2, expected_distance(logits_BP4R) * stride_P1)
        gt_BG4, labels_BG, valid_BG = pack_ground_truth(gt_boxes_BN4.to(device), gt_labels_BN.to(device))
        assigned = assign(
            pred_boxes_BP4.detach(),
            cls_BPK.detach().sigmoid(),
            points_P2,
            labels_BG,
            gt_BG4,
            valid_BG,
            topk=cfg.topk,
            alpha=cfg.alpha,
            beta=cfg.beta,
            eps=cfg.eps,
        )
        scores_sum = assigned.scores_BPK.sum().clamp(min=1)
        bce = F.binary_cross_entropy_with_logits(cls_BPK, assigned.scores_BPK, reduction="none")
        loss_cls = cfg.loss_cls_weight * bce.sum() / scores_sum
        loss_bbox, loss_dfl = _box_losses(pred_boxes_BP4, logits_BP4R, priors_P3, assigned, cfg)
        loss_bbox, loss_dfl = loss_bbox / scores_sum, loss_dfl / (scores_sum + AVG_FACTOR_EPS)
    return {
        "loss": loss_cls + loss_bbox + loss_dfl,
        "cls": loss_cls.detach(),
        "bbox": loss_bbox.detach(),
        "dfl": loss_dfl.detach(),
        "num_pos": assigned.fg_mask_BP.sum().float(),
    }


def _box_losses(
    pred_boxes_BP4: torch.Tensor,
    logits_BP4R: torch.Tensor,
    priors_P3: torch.Tensor,
    assigned: Assignment,
    cfg: YOLOv8HeadConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sums (before the division by the assigned-score sum) of the CIoU and DFL losses.

    Positives are picked by boolean indexing: with none, the sums are exact zeros that still carry a
    (zero) gradient to every box-branch parameter, as MMYOLO's ``pred.sum() * 0``.
    """
    fg_BP = assigned.fg_mask_BP
    stride_P1 = priors_P3[:, 2:]
    # MMYOLO compares boxes in stride units so every level weighs the same.
    pred_pos_N4 = (pred_boxes_BP4 / stride_P1)[fg_BP]
    target_BP4 = assigned.boxes_BP4 / stride_P1
    target_pos_N4 = target_BP4[fg_BP]
    weight_N = assigned.scores_BPK.sum(dim=-1)[fg_BP]
    loss_bbox = cfg.loss_bbox_weight * ((1.0 - ciou(pred_pos_N4, target_pos_N4)) * weight_N).sum()
    ltrb_BP4 = box_to_distance(priors_P3[:, :2] / stride_P1, target_BP4, cfg.reg_max - 1, DFL_TARGET_EPS)
    dfl_N4 = distribution_focal_loss(logits_BP4R[fg_BP].reshape(-1, cfg.reg_max), ltrb_BP4[fg_BP].reshape(-1))
    loss_dfl = cfg.loss_dfl_weight * (dfl_N4.reshape(-1, 4) * weight_N[:, None]).sum()
    return loss_bbox, loss_dfl
