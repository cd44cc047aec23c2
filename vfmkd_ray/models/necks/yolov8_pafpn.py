"""YOLOv8's path aggregation neck, state-dict compatible with MMYOLO 0.6.0's ``YOLOv8PAFPN``.

Follows ``mmyolo/models/necks/yolov8_pafpn.py`` and its bases ``yolov5_pafpn.py`` and
``base_yolo_neck.py``: a top-down pass (upsample, concat, ``CSPLayerWithTwoConv``) from stride 32 to
stride 8, then a bottom-up pass (3 x 3 stride-2 conv, concat, ``CSPLayerWithTwoConv``) back to
stride 32. Module names are MMYOLO's (``reduce_layers``, ``upsample_layers``, ``top_down_layers``,
``downsample_layers``, ``bottom_up_layers``, ``out_layers``), with ``nn.Identity`` where MMYOLO has
one, so ``state_dict()`` keys equal MMYOLO's ``neck.*`` keys.

MMYOLO sizes every layer as ``make_divisible(nominal_channels, widen_factor)``; here the channels
are the backbone's real ones (from ``feature_info``) and the widen factor is 1, which gives the same
widths for the standard YOLOv8 sizes and also fits any other student. Weights keep PyTorch's default
init, as MMYOLO's ``YOLOv5PAFPN.init_weights`` resets every ``Conv2d`` to it.
"""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.necks.base import Neck
from vfmkd_ray.models.necks.config import YOLOv8PAFPNConfig
from vfmkd_ray.models.students.config import StudentConfig
from vfmkd_ray.models.students.yolov8_cspdarknet import (
    YOLOV8_SIZES,
    ConvModule,
    CSPLayerWithTwoConv,
    make_round,
)

# The P5 levels the neck fuses, in order (MMYOLO's ``featmap_strides``).
PAFPN_STRIDES = (8, 16, 32)
# deepen_factor for students that are not YOLOv8 (YOLOv8-n/s's value).
DEFAULT_DEEPEN_FACTOR = 0.33


def pafpn_deepen_factor(cfg: YOLOv8PAFPNConfig, student: StudentConfig) -> float:
    """The neck's depth multiplier: the config's, else the YOLOv8 student's size's, else 0.33."""
    if cfg.deepen_factor is not None:
        return cfg.deepen_factor
    if student.name == "yolov8_cspdarknet":
        return YOLOV8_SIZES[student.size].deepen_factor
    return DEFAULT_DEEPEN_FACTOR


def _select_levels(backbone_info: FeatureInfo) -> list[int]:
    """Indices of the backbone's stride 8, 16 and 32 levels."""
    strides = backbone_info.reduction()
    missing = [s for s in PAFPN_STRIDES if s not in strides]
    if missing:
        raise ValueError(
            f"neck yolov8_pafpn needs backbone levels with strides {list(PAFPN_STRIDES)}; "
            f"the student has strides {strides} (missing {missing})"
        )
    return [backbone_info.index_of_stride(s) for s in PAFPN_STRIDES]


class YOLOv8PAFPN(Neck):
    """MMYOLO's ``YOLOv8PAFPN`` (P5) on the backbone's stride 8/16/32 levels.

    Args:
        backbone_info: the student backbone's levels; the stride 8, 16 and 32 ones are used.
        deepen_factor: multiplies ``num_csp_blocks`` (``make_round``), as in MMYOLO.
        num_csp_blocks: bottlenecks per ``CSPLayerWithTwoConv`` before ``deepen_factor``.
    """

    def __init__(self, backbone_info: FeatureInfo, deepen_factor: float, num_csp_blocks: int) -> None:
        super().__init__()
        self.level_indices = _select_levels(backbone_info)
        channels = [backbone_info.channels()[i] for i in self.level_indices]
        num_blocks = make_round(num_csp_blocks, deepen_factor)
        num_levels = len(channels)
        # MMYOLO's YOLOv8PAFPN overrides the reduce layers with Identity; out layers are Identity too.
        self.reduce_layers = nn.ModuleList(nn.Identity() for _ in range(num_levels))
        self.upsample_layers = nn.ModuleList()
        self.top_down_layers = nn.ModuleList()
        # Built from the deepest level down, as MMYOLO does (idx = 2, 1), so index 0 is stride 16.
        for idx in range(num_levels - 1, 0, -1):
            self.upsample_layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.top_down_layers.append(
                CSPLayerWithTwoConv(channels[idx - 1] + channels[idx], channels[idx - 1], num_blocks, False)
            )
        self.downsample_layers = nn.ModuleList()
        self.bottom_up_layers = nn.ModuleList()
        for idx in range(num_levels - 1):
            self.downsample_layers.append(ConvModule(channels[idx], channels[idx], 3, stride=2, padding=1))
            self.bottom_up_layers.append(
                CSPLayerWithTwoConv(channels[idx] + channels[idx + 1], channels[idx + 1], num_blocks, False)
            )
        self.out_layers = nn.ModuleList(nn.Identity() for _ in range(num_levels))
        self.feature_info = FeatureInfo(
            [
                FeatureLevel(c, s, f"neck.out_layers.{i}")
                for i, (c, s) in enumerate(zip(channels, PAFPN_STRIDES, strict=True))
            ]
        )

    def forward(self, levels: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Fuses the backbone's stride 8/16/32 levels.

        Args:
            levels: every backbone level (``StudentBackbone.forward``'s output).

        Returns:
            The stride 8, 16 and 32 outputs, with the channels of ``feature_info``.
        """
        reduced = [layer(levels[i]) for layer, i in zip(self.reduce_layers, self.level_indices, strict=True)]
        num_levels = len(reduced)
        # Top-down: inner[0] ends up at stride 8, inner[-1] is the reduced stride-32 level.
        inner = [reduced[-1]]
        for idx in range(num_levels - 1, 0, -1):
            layer = num_levels - 1 - idx
            upsampled = self.upsample_layers[layer](inner[0])
            inner.insert(0, self.top_down_layers[layer](torch.cat([upsampled, reduced[idx - 1]], dim=1)))
        # Bottom-up.
        outs = [inner[0]]
        for idx in range(num_levels - 1):
            downsampled = self.downsample_layers[idx](outs[-1])
            outs.append(self.bottom_up_layers[idx](torch.cat([downsampled, inner[idx + 1]], dim=1)))
        return tuple(layer(out) for layer, out in zip(self.out_layers, outs, strict=True))
