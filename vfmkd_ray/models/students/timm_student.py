"""Any timm model as a student, through ``features_only=True`` (RepViT, HGNetv2, ViT, MambaOut...),
built by the timm student family (``timm_family``).

The timm feature extractor sits under ``body``; its ``feature_info`` is re-expressed as ours.
"""

from __future__ import annotations

import timm
import torch

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.students.base import StudentBackbone

TIMM_BODY = "body."  # the timm feature extractor's keys in the student's state dict


class TimmStudent(StudentBackbone):
    """``timm.create_model(name, features_only=True)``, never downloading weights."""

    def __init__(self, model_name: str, out_indices: tuple[int, ...] | None = None, **kwargs):
        super().__init__()
        if model_name not in timm.list_models():
            close = timm.list_models(f"*{model_name.split('_')[0]}*")[:10]
            raise ValueError(f"unknown timm model {model_name!r}; similar names: {close}")
        extra = {"out_indices": out_indices} if out_indices is not None else {}
        try:
            self.body = timm.create_model(model_name, pretrained=False, features_only=True, **extra, **kwargs)
        except (RuntimeError, TypeError, AssertionError) as err:
            raise ValueError(f"timm model {model_name!r} has no features_only form: {err}") from err
        self.model_name = model_name
        pretrained_cfg = getattr(self.body, "pretrained_cfg", None) or {}
        if pretrained_cfg.get("fixed_input_size"):
            self.fixed_input_size = int(pretrained_cfg["input_size"][-1])
        info = self.body.feature_info
        self.feature_info = FeatureInfo(
            [
                FeatureLevel(c, r, m)
                for c, r, m in zip(info.channels(), info.reduction(), info.module_name(), strict=True)
            ]
        )

        # Some timm families (MambaOut, ...) emit channels-last features; students always give NCHW.
        self.channels_last_output = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.body(images_BCHW)
        if self.channels_last_output:
            return tuple(f.permute(0, 3, 1, 2) for f in feats)
        return tuple(feats)
