"""YOLOv8's decoupled prediction convs, state-dict compatible with MMYOLO 0.6.0's ``YOLOv8HeadModule``.

Follows ``mmyolo/models/dense_heads/yolov8_head.py``: per level a class branch and a box branch, each
``ConvModule(3x3) -> ConvModule(3x3) -> Conv2d(1x1)``; the box branch predicts, per side (left, top,
right, bottom), a distribution over ``reg_max`` bins whose expectation is the distance in stride
units (DFL, Li et al., "Generalized Focal Loss", 2020). Names are MMYOLO's (``cls_preds``,
``reg_preds``, non-persistent ``proj``), so keys equal MMYOLO's ``bbox_head.head_module.*``.

Init follows MMYOLO: mmcv's ``ConvModule`` puts a Kaiming normal (fan_out, relu) init on its conv
when built, the last 1x1 convs keep PyTorch's default, and ``init_weights`` sets the box bias to 1
and the class bias to ``log(5 / num_classes / (640 / stride)^2)`` (about 5 objects per 640 image).

Channels come from the neck's real ones (MMYOLO: ``make_divisible(nominal, widen_factor)``, equal for
the standard sizes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from vfmkd_ray.models.students.yolov8_cspdarknet import ConvModule


class HeadOutput(NamedTuple):
    """Per level (stride 8, 16, 32), for a batch of B images on an h x w grid:

    - ``cls_logits``: ``B x K x h x w`` class logits (K classes, sigmoid per class);
    - ``bbox_dists``: ``B x 4 x h x w`` expected distances (left, top, right, bottom) in stride units;
    - ``dist_logits``: ``B x hw x 4 x reg_max`` logits of the distance distributions.
    """

    cls_logits: tuple[torch.Tensor, ...]
    bbox_dists: tuple[torch.Tensor, ...]
    dist_logits: tuple[torch.Tensor, ...]


def _branch(in_ch: int, mid_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        ConvModule(in_ch, mid_ch, 3, padding=1),
        ConvModule(mid_ch, mid_ch, 3, padding=1),
        nn.Conv2d(mid_ch, out_ch, 1),
    )


class YOLOv8HeadModule(nn.Module):
    """MMYOLO's ``YOLOv8HeadModule``.

    Args:
        in_channels: channels of each input level (the neck's ``feature_info.channels()``).
        strides: stride of each input level, for the class-bias init.
        num_classes: number of classes K.
        reg_max: bins of each side's distance distribution.
    """

    def __init__(
        self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int, reg_max: int = 16
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(f"one stride per level is needed: channels {in_channels}, strides {strides}")
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.featmap_strides = tuple(strides)
        # MMYOLO sizes both branches from the first (stride-8) level for every level.
        reg_mid = max(16, in_channels[0] // 4, reg_max * 4)
        cls_mid = max(in_channels[0], num_classes)
        self.cls_preds = nn.ModuleList(_branch(c, cls_mid, num_classes) for c in in_channels)
        self.reg_preds = nn.ModuleList(_branch(c, reg_mid, 4 * reg_max) for c in in_channels)
        self.register_buffer("proj", torch.arange(reg_max, dtype=torch.float), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """MMYOLO's init: Kaiming on the ConvModules (mmcv), then the prior biases of the last convs."""
        for module in self.modules():
            if isinstance(module, ConvModule):
                nn.init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
        for cls_pred, reg_pred, stride in zip(
            self.cls_preds, self.reg_preds, self.featmap_strides, strict=True
        ):
            nn.init.constant_(reg_pred[-1].bias, 1.0)
            nn.init.constant_(cls_pred[-1].bias, math.log(5 / self.num_classes / (640 / stride) ** 2))

    def forward(self, levels: Sequence[torch.Tensor]) -> HeadOutput:
        """Class logits, expected box distances and distance logits of every level (``HeadOutput``)."""
        if len(levels) != len(self.cls_preds):
            raise ValueError(f"expected {len(self.cls_preds)} levels, got {len(levels)}")
        cls_logits, bbox_dists, dist_logits = [], [], []
        for feat_BChw, cls_pred, reg_pred in zip(levels, self.cls_preds, self.reg_preds, strict=True):
            b, _, h, w = feat_BChw.shape
            cls_logits.append(cls_pred(feat_BChw))
            # B x 4*R x h x w -> B x hw x 4 x R, MMYOLO's layout of ``bbox_dist_preds``.
            logits_BP4R = reg_pred(feat_BChw).reshape(b, 4, self.reg_max, h * w).permute(0, 3, 1, 2)
            dist_BP4 = logits_BP4R.softmax(-1).matmul(self.proj.to(logits_BP4R.dtype))
            bbox_dists.append(dist_BP4.transpose(1, 2).reshape(b, 4, h, w))
            dist_logits.append(logits_BP4R)
        return HeadOutput(tuple(cls_logits), tuple(bbox_dists), tuple(dist_logits))
