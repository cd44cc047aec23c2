"""Mask losses of the ``sam_mask`` head, on K predicted masks at once.

- ``sigmoid_focal_loss``: Lin et al., "Focal Loss for Dense Object Detection", 2017, with the
  alpha 0.25 / gamma 2 that SAM trains with (Kirillov et al. 2023, appendix A: 20:1 focal:dice);
  the formula is torchvision's ``sigmoid_focal_loss``.
- ``dice_loss``: Milletari et al., "V-Net", 2016, smoothed by +1 as DETR's ``dice_loss``
  (``detr/models/segmentation.py``).
- ``binary_kl``: per-pixel KL between the teacher's and the student's Bernoulli mask probabilities
  at a temperature, scaled by T^2 (Hinton et al. 2015): the target of EdgeSAM's prompt-in-the-loop
  distillation (Zhou et al. 2023) as a soft label.

Every loss averages over a mask's valid pixels (``valid_Khw``: 1 inside the unpadded image, so
letterbox borders teach nothing), then over masks, so each prompt counts the same whatever its size.

Legend: K masks, h/w the mask grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
DICE_SMOOTH = 1.0


def sigmoid_focal_loss(
    logits_Khw: torch.Tensor,
    targets_Khw: torch.Tensor,
    valid_Khw: torch.Tensor,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
) -> torch.Tensor:
    """Mean focal loss of 0/1 ``targets`` under ``logits``."""
    prob_Khw = logits_Khw.sigmoid()
    ce_Khw = F.binary_cross_entropy_with_logits(logits_Khw, targets_Khw, reduction="none")
    p_t_Khw = prob_Khw * targets_Khw + (1 - prob_Khw) * (1 - targets_Khw)
    alpha_t_Khw = alpha * targets_Khw + (1 - alpha) * (1 - targets_Khw)
    return _mean_per_mask(alpha_t_Khw * ce_Khw * (1 - p_t_Khw).pow(gamma), valid_Khw)


def dice_loss(logits_Khw: torch.Tensor, targets_Khw: torch.Tensor, valid_Khw: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - soft dice`` between the mask probabilities and 0/1 ``targets``."""
    prob_Khw = logits_Khw.sigmoid() * valid_Khw
    targets_Khw = targets_Khw * valid_Khw
    overlap_K = (prob_Khw * targets_Khw).flatten(1).sum(1)
    total_K = prob_Khw.flatten(1).sum(1) + targets_Khw.flatten(1).sum(1)
    return (1 - (2 * overlap_K + DICE_SMOOTH) / (total_K + DICE_SMOOTH)).mean()


def binary_kl(
    student_Khw: torch.Tensor, teacher_Khw: torch.Tensor, valid_Khw: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2`` times the mean ``KL(Bernoulli(sigmoid(t / T)) || Bernoulli(sigmoid(s / T)))``.

    Written as cross-entropy minus the teacher's entropy, both by the same stable kernel, so equal
    logits give exactly zero.
    """
    student_Khw, teacher_Khw = student_Khw / temperature, teacher_Khw / temperature
    target_Khw = teacher_Khw.sigmoid()
    cross_Khw = F.binary_cross_entropy_with_logits(student_Khw, target_Khw, reduction="none")
    entropy_Khw = F.binary_cross_entropy_with_logits(teacher_Khw, target_Khw, reduction="none")
    return temperature**2 * _mean_per_mask(cross_Khw - entropy_Khw, valid_Khw)


@torch.no_grad()
def mask_iou(logits_Khw: torch.Tensor, targets_Khw: torch.Tensor, valid_Khw: torch.Tensor) -> torch.Tensor:
    """Per mask, the IoU of ``logits > 0`` with the 0/1 ``targets`` over valid pixels (1 when both
    are empty)."""
    pred_Khw = (logits_Khw > 0) & (valid_Khw > 0)
    truth_Khw = (targets_Khw > 0) & (valid_Khw > 0)
    inter_K = (pred_Khw & truth_Khw).flatten(1).sum(1).float()
    union_K = (pred_Khw | truth_Khw).flatten(1).sum(1).float()
    return torch.where(union_K > 0, inter_K / union_K.clamp_min(1.0), torch.ones_like(union_K))


def _mean_per_mask(values_Khw: torch.Tensor, valid_Khw: torch.Tensor) -> torch.Tensor:
    per_mask_K = (values_Khw * valid_Khw).flatten(1).sum(1) / valid_Khw.flatten(1).sum(1).clamp_min(1.0)
    return per_mask_K.mean()
