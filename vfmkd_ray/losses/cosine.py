"""Cosine feature distillation (RT-DETRv4, arXiv 2510.25257): 1 - cosine similarity per position
between the adapted student level and the teacher map, over channels, averaged over the positions
the target holds (letterbox padding and a warped target's uncovered cells left out). Blind to the
teacher's scale, so its weight means the same for any teacher; zero when the adapted student points
where the teacher does.
"""

from __future__ import annotations

import torch

from vfmkd_ray.batch import Batch
from vfmkd_ray.losses.base import TeacherMapTerm, masked_mean, teacher_cosine


class CosineDistillation(TeacherMapTerm):
    def __call__(self, pred_BCHW: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target_BCHW = self.teacher_target(batch, self.teacher_key).detach().float()
        mask_B1HW = batch.target_mask(self.teacher_key, tuple(target_BCHW.shape[-2:]))
        cos_BHW = torch.nn.functional.cosine_similarity(pred_BCHW.float(), target_BCHW, dim=1, eps=1e-6)
        loss = masked_mean((1.0 - cos_BHW).unsqueeze(1), mask_B1HW)
        return loss, {"cos": teacher_cosine(pred_BCHW, target_BCHW, batch, self.teacher_key)}
