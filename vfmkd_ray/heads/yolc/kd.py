"""Detection KD: the teacher detector only infers (frozen, ``no_grad``); the student learns from its
global heatmap and coarse boxes and from its refined boxes on the dense-cluster crops.

- global heatmap: ``MSE(sigmoid(hm_s), sigmoid(hm_t))``, or the per-pixel binary KL at temperature
  ``T`` scaled by ``T^2``;
- global coarse: ``MSE(decode(coarse_s), decode(coarse_t))``;
- local refine: mean over crops of ``MSE(decode(refined_s), decode(refined_t))`` inside the crop.

Decoded boxes are compared in grid units (pixels / stride), so the terms do not grow with the
image size. Crops come from the teacher's heatmap (``use_teacher_crop``) or the student's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkd_ray.heads.base import Rerun
from vfmkd_ray.heads.yolc.boxes import decode
from vfmkd_ray.heads.yolc.config import YOLCDistillConfig, YOLCHeadConfig
from vfmkd_ray.heads.yolc.crops import crop_and_zoom
from vfmkd_ray.heads.yolc.lsm import find_clusters
from vfmkd_ray.heads.yolc.module import STRIDE, DetectorOutput


def heatmap_kd(
    student_BKHW: torch.Tensor, teacher_BKHW: torch.Tensor, mode: str, temperature: float
) -> torch.Tensor:
    teacher_BKHW = teacher_BKHW.detach().float()
    student_BKHW = student_BKHW.float()
    if mode == "mse":
        return F.mse_loss(torch.sigmoid(student_BKHW), torch.sigmoid(teacher_BKHW))
    if mode == "kl":
        target = torch.sigmoid(teacher_BKHW / temperature)
        log_p, log_not_p = F.logsigmoid(student_BKHW / temperature), F.logsigmoid(-student_BKHW / temperature)
        log_q, log_not_q = F.logsigmoid(teacher_BKHW / temperature), F.logsigmoid(-teacher_BKHW / temperature)
        kl = target * (log_q - log_p) + (1 - target) * (log_not_q - log_not_p)
        return kl.mean() * temperature**2
    raise ValueError(f"unknown heatmap KD {mode!r}; valid: mse, kl")


def box_map_kd(
    student_B4HW: torch.Tensor, teacher_B4HW: torch.Tensor, stride: int, mask_B1HW=None
) -> torch.Tensor:
    """MSE of the decoded boxes, in grid units, optionally over ``mask`` cells only."""
    squared = (
        (decode(student_B4HW.float(), stride) - decode(teacher_B4HW.detach().float(), stride))
        .div(stride)
        .pow(2)
    )
    if mask_B1HW is None:
        return squared.mean()
    weights = mask_B1HW.expand_as(squared)
    return (squared * weights).sum() / weights.sum().clamp_min(1.0)


def detection_kd(
    student: Rerun,
    teacher: Rerun,
    images_BCHW: torch.Tensor,
    student_out: DetectorOutput,
    teacher_out: DetectorOutput,
    distill: YOLCDistillConfig,
    cfg: YOLCHeadConfig,
) -> dict[str, torch.Tensor]:
    """The weighted KD total (``kd``), its terms (``kd/hm``, ``kd/coarse``, ``kd/refine``) and the
    crop count; ``student`` and ``teacher`` run each detector on other images (the crops)."""
    stride = STRIDE
    terms = {
        "hm": heatmap_kd(
            student_out.heatmap_BKHW, teacher_out.heatmap_BKHW, distill.hm_kd, distill.temperature
        ),
        "coarse": box_map_kd(student_out.coarse_B4HW, teacher_out.coarse_B4HW, stride),
    }
    source = teacher_out if distill.use_teacher_crop else student_out
    probabilities = torch.sigmoid(source.heatmap_BKHW.detach().float())
    image_hw = tuple(images_BCHW.shape[-2:])
    crops = [
        find_clusters(p, image_hw, stride, cfg.lsm, cfg.max_patches_per_img, cfg.min_patch_size)
        for p in probabilities
    ]
    patches, metas = crop_and_zoom(images_BCHW, crops, cfg.lsm.zoom, cfg.patch_size)
    if metas:
        patch_student = student(patches)
        with torch.no_grad():
            patch_teacher = teacher(patches)
        grid = patch_student.refined_B4HW.shape[-2:]
        mask = patches.new_zeros(len(metas), 1, *grid)
        for k, meta in enumerate(metas):  # the resized crop, not the zero canvas around it
            mask[k, :, : -(-meta.height // stride), : -(-meta.width // stride)] = 1
        per_patch = [
            box_map_kd(
                patch_student.refined_B4HW[k : k + 1],
                patch_teacher.refined_B4HW[k : k + 1],
                stride,
                mask[k : k + 1],
            )
            for k in range(len(metas))
        ]
        terms["refine"] = torch.stack(per_patch).mean()
    else:
        terms["refine"] = student_out.refined_B4HW.sum() * 0
    total = (
        distill.kd_weight_global_hm * terms["hm"]
        + distill.kd_weight_global_coarse * terms["coarse"]
        + distill.kd_weight_local_refine * terms["refine"]
    )
    return {
        "kd": total,
        **{f"kd/{k}": v.detach() for k, v in terms.items()},
        "kd/patches": torch.tensor(float(len(metas))),
    }
