"""YOLOv8 CSPDarknet (P5), state-dict compatible with MMYOLO's ``YOLOv8CSPDarknet``.

Module and parameter names follow MMYOLO (``mmyolo/models/backbones/csp_darknet.py`` and
``mmyolo/models/layers/yolo_bricks.py``): ``stem``, ``stage1``..``stage4`` as ``nn.Sequential``
(downsample ConvModule, ``CSPLayerWithTwoConv``, and ``SPPFBottleneck`` closing stage 4), with
ConvModule-style ``conv``/``bn`` children. So ``state_dict()`` loads with ``strict=True`` into
MMYOLO's class built with the same ``deepen_factor``, ``widen_factor`` and
``last_stage_out_channels``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.students.base import StudentBackbone

# BatchNorm settings of MMYOLO's YOLOv8 configs (norm_cfg=dict(type='BN', momentum=0.03, eps=0.001)).
BN_MOMENTUM = 0.03
BN_EPS = 0.001

# P5 stages: (in_channels, out_channels, num_blocks, add_identity, use_spp); the last stage's
# out_channels is the per-size ``last_stage_out_channels``.
_P5_STAGES = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False))
_P5_LAST_STAGE = (512, 3, True, True)


@dataclass(frozen=True)
class YOLOv8Size:
    deepen_factor: float
    widen_factor: float
    last_stage_out_channels: int


# From the official YOLOv8 configs (mmyolo configs/yolov8/yolov8_{n,s,m,l,x}_syncbn_fast_8xb16-500e).
YOLOV8_SIZES: dict[str, YOLOv8Size] = {
    "n": YOLOv8Size(0.33, 0.25, 1024),
    "s": YOLOv8Size(0.33, 0.50, 1024),
    "m": YOLOv8Size(0.67, 0.75, 768),
    "l": YOLOv8Size(1.00, 1.00, 512),
    "x": YOLOv8Size(1.00, 1.25, 512),
}


def make_divisible(channels: float, widen_factor: float, divisor: int = 8) -> int:
    return math.ceil(channels * widen_factor / divisor) * divisor


def make_round(num_blocks: int, deepen_factor: float) -> int:
    return max(round(num_blocks * deepen_factor), 1) if num_blocks > 1 else num_blocks


class ConvModule(nn.Module):
    """Conv (no bias) -> BN -> SiLU, named like mmcv's ConvModule (``conv``, ``bn``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.activate = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class DarknetBottleneck(nn.Module):
    """3x3 -> 3x3 bottleneck with an identity shortcut (MMYOLO's YOLOv8 variant)."""

    def __init__(self, channels: int, add_identity: bool):
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 3, padding=1)
        self.conv2 = ConvModule(channels, channels, 3, padding=1)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return x + out if self.add_identity else out


class CSPLayerWithTwoConv(nn.Module):
    """YOLOv8's C2f block: split the main conv in two, chain bottlenecks on one half, concat all."""

    def __init__(self, in_ch: int, out_ch: int, num_blocks: int, add_identity: bool):
        super().__init__()
        self.mid_channels = int(out_ch * 0.5)
        self.main_conv = ConvModule(in_ch, 2 * self.mid_channels, 1)
        self.final_conv = ConvModule((2 + num_blocks) * self.mid_channels, out_ch, 1)
        self.blocks = nn.ModuleList(
            DarknetBottleneck(self.mid_channels, add_identity) for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.main_conv(x).split((self.mid_channels, self.mid_channels), dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.final_conv(torch.cat(parts, dim=1))


class SPPFBottleneck(nn.Module):
    """Spatial pyramid pooling, fast: one 5x5 max-pool applied three times in series."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 5):
        super().__init__()
        mid = int(in_ch * 0.5)
        self.conv1 = ConvModule(in_ch, mid, 1)
        self.poolings = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)
        self.conv2 = ConvModule(mid * 4, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        y1 = self.poolings(x)
        y2 = self.poolings(y1)
        return self.conv2(torch.cat([x, y1, y2, self.poolings(y2)], dim=1))


class YOLOv8CSPDarknet(StudentBackbone):
    """The YOLOv8 backbone. ``out_indices`` count the stem as 0, so (1, 2, 3, 4) is S4..S32."""

    def __init__(self, size: str = "s", out_indices: tuple[int, ...] = (1, 2, 3, 4)):
        super().__init__()
        if size not in YOLOV8_SIZES:
            raise ValueError(f"unknown YOLOv8 size {size!r}; valid sizes: {sorted(YOLOV8_SIZES)}")
        if not out_indices or any(i not in range(5) for i in out_indices):
            raise ValueError(f"out_indices must be a non-empty subset of 0..4, got {out_indices}")
        spec = YOLOV8_SIZES[size]
        self.size = size
        self.out_indices = tuple(out_indices)
        widen, deepen = spec.widen_factor, spec.deepen_factor
        stem_ch = make_divisible(64, widen)
        self.stem = ConvModule(3, stem_ch, 3, stride=2, padding=1)
        stages = (
            *_P5_STAGES,
            (_P5_LAST_STAGE[0], spec.last_stage_out_channels, *_P5_LAST_STAGE[1:]),
        )
        levels = [FeatureLevel(stem_ch, 2, "stem")]
        for index, (in_ch, out_ch, blocks, add_identity, use_spp) in enumerate(stages, start=1):
            in_ch, out_ch = make_divisible(in_ch, widen), make_divisible(out_ch, widen)
            layers: list[nn.Module] = [
                ConvModule(in_ch, out_ch, 3, stride=2, padding=1),
                CSPLayerWithTwoConv(out_ch, out_ch, make_round(blocks, deepen), add_identity),
            ]
            if use_spp:
                layers.append(SPPFBottleneck(out_ch, out_ch))
            self.add_module(f"stage{index}", nn.Sequential(*layers))
            levels.append(FeatureLevel(out_ch, 2 ** (index + 1), f"stage{index}"))
        self.feature_info = FeatureInfo([levels[i] for i in self.out_indices])
        self._layer_names = ("stem", "stage1", "stage2", "stage3", "stage4")

    def forward(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        x = images_BCHW
        for index, name in enumerate(self._layer_names):
            x = getattr(self, name)(x)
            if index in self.out_indices:
                outputs.append(x)
            if index >= max(self.out_indices):
                break
        return tuple(outputs)
