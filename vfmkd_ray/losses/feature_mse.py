"""Masked feature MSE against a teacher feature map (the seed design's main KD term).

Padding added by letterboxing is masked out, so the student is not taught to imitate the teacher's
response to black borders; so are the cells of a warped target that no stored map covers.
"""

from __future__ import annotations

import torch

from vfmkd_ray.batch import Batch
from vfmkd_ray.losses.base import TeacherMapTerm, masked_mean, teacher_cosine


class FeatureMSE(TeacherMapTerm):
    def __call__(self, pred_BCHW: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target_BCHW = self.teacher_target(batch, self.teacher_key).to(pred_BCHW.dtype)
        mask_B1HW = batch.target_mask(self.teacher_key, tuple(target_BCHW.shape[-2:]))
        loss = masked_mean((pred_BCHW - target_BCHW).pow(2), mask_B1HW)
        return loss, {"cos": teacher_cosine(pred_BCHW, target_BCHW, batch, self.teacher_key)}
