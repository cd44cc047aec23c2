"""Channel-wise distillation (Shu et al., "Channel-wise Knowledge Distillation for Dense
Prediction", ICCV 2021).

Each channel's activations become a distribution over the spatial positions (a softmax at
temperature ``T``); the loss is the KL divergence from the teacher's distribution to the student's,
summed over positions, averaged over channels and images and scaled by ``T^2`` (as in the paper and
MMRazor's ``ChannelWiseDivergence``). Letterbox padding (and a warped target's uncovered cells)
is left out of both distributions, so the student is not taught where the teacher puts mass on
black borders. Zero when the adapted student
equals the teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkd_ray.batch import Batch
from vfmkd_ray.losses.base import StudentLevels, TeacherMapTerm, teacher_cosine
from vfmkd_ray.losses.config import CWDConfig

PAD_LOGIT = -1e4  # finite, so a fully padded row cannot produce NaN


class ChannelWiseDistillation(TeacherMapTerm):
    def __init__(self, name: str, cfg: CWDConfig, levels: StudentLevels, teacher_key: str, teacher_shape):
        super().__init__(name, cfg, levels, teacher_key, teacher_shape)
        self.temperature = cfg.temperature

    def __call__(self, pred_BCHW: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target_BCHW = self.teacher_target(batch, self.teacher_key).detach().float()
        student_BCHW = pred_BCHW.float()
        batch_size, channels = target_BCHW.shape[:2]
        mask_B1HW = batch.target_mask(self.teacher_key, tuple(target_BCHW.shape[-2:]))
        padding_B1N = (mask_B1HW.flatten(2) == 0).expand(-1, channels, -1)
        tau = self.temperature
        teacher_BCN = (target_BCHW.flatten(2) / tau).masked_fill(padding_B1N, PAD_LOGIT)
        student_BCN = (student_BCHW.flatten(2) / tau).masked_fill(padding_B1N, PAD_LOGIT)
        teacher_log_BCN = F.log_softmax(teacher_BCN, dim=2)
        kl_BC = (teacher_log_BCN.exp() * (teacher_log_BCN - F.log_softmax(student_BCN, dim=2))).sum(dim=2)
        loss = kl_BC.sum() * tau**2 / (batch_size * channels)
        return loss, {"cos": teacher_cosine(student_BCHW, target_BCHW, batch, self.teacher_key)}
