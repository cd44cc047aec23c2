"""MMYOLO 0.6.0's ``YOLOv8PAFPN`` and ``YOLOv8HeadModule`` state-dict layouts, derived by hand from
MMYOLO's source formulas and the YOLOv8 configs (mmyolo cannot be installed next to current torch),
for tests that check key names and shapes against them. Nothing here calls the product code.

Sources: ``mmyolo/models/necks/{base_yolo_neck,yolov5_pafpn,yolov8_pafpn}.py``,
``mmyolo/models/dense_heads/yolov8_head.py``, ``mmyolo/models/layers/yolo_bricks.py``
(``CSPLayerWithTwoConv``), ``mmyolo/models/utils/misc.py`` and
``configs/yolov8/yolov8_{n,s,m,l,x}_syncbn_fast_8xb16-500e_coco.py``.
"""

from __future__ import annotations

import math

# Per size from the configs: (deepen_factor, widen_factor, last_stage_out_channels).
MMYOLO_SIZES = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}
NUM_CSP_BLOCKS = 3  # neck num_csp_blocks in the configs
REG_MAX = 16
NUM_CLASSES = 80


def _make_divisible(x: float, widen_factor: float) -> int:
    # mmyolo/models/utils/misc.py
    return math.ceil(x * widen_factor / 8) * 8


def _make_round(x: int, deepen_factor: float) -> int:
    return max(round(x * deepen_factor), 1) if x > 1 else x


def _conv_module(prefix: str, out_ch: int, in_ch: int, kernel: int) -> dict[str, tuple[int, ...]]:
    """mmcv ConvModule with BN and no conv bias (bias='auto' with a norm)."""
    shapes = {f"{prefix}.conv.weight": (out_ch, in_ch, kernel, kernel)}
    for stat in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.bn.{stat}"] = (out_ch,)
    shapes[f"{prefix}.bn.num_batches_tracked"] = ()
    return shapes


def _csp_layer_with_two_conv(prefix: str, in_ch: int, out_ch: int, num_blocks: int) -> dict:
    mid = int(out_ch * 0.5)  # expand_ratio 0.5
    shapes = _conv_module(f"{prefix}.main_conv", 2 * mid, in_ch, 1)
    shapes |= _conv_module(f"{prefix}.final_conv", out_ch, (2 + num_blocks) * mid, 1)
    for block in range(num_blocks):
        # DarknetBottleneck(mid, mid, expansion=1, kernel_size=(3, 3)): two 3x3 ConvModules.
        shapes |= _conv_module(f"{prefix}.blocks.{block}.conv1", mid, mid, 3)
        shapes |= _conv_module(f"{prefix}.blocks.{block}.conv2", mid, mid, 3)
    return shapes


def mmyolo_neck_state_shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of MMYOLO's YOLOv8PAFPN of ``size`` (keys below ``neck.``)."""
    deepen, widen, last = MMYOLO_SIZES[size]
    in_channels = [256, 512, last]
    out_channels = [256, 512, last]
    blocks = _make_round(NUM_CSP_BLOCKS, deepen)
    shapes: dict[str, tuple[int, ...]] = {}
    # reduce_layers: all nn.Identity (YOLOv8PAFPN.build_reduce_layer); upsample: nn.Upsample.
    # top_down_layers are built for idx = 2, 1 (list positions 0, 1).
    for position, idx in enumerate((2, 1)):
        shapes |= _csp_layer_with_two_conv(
            f"top_down_layers.{position}",
            _make_divisible(in_channels[idx - 1] + in_channels[idx], widen),
            _make_divisible(out_channels[idx - 1], widen),
            blocks,
        )
    for idx in (0, 1):
        # YOLOv5PAFPN.build_downsample_layer: 3x3 stride 2 on in_channels[idx].
        width = _make_divisible(in_channels[idx], widen)
        shapes |= _conv_module(f"downsample_layers.{idx}", width, width, 3)
        shapes |= _csp_layer_with_two_conv(
            f"bottom_up_layers.{idx}",
            _make_divisible(out_channels[idx] + out_channels[idx + 1], widen),
            _make_divisible(out_channels[idx + 1], widen),
            blocks,
        )
    # out_layers: all nn.Identity.
    return shapes


def mmyolo_neck_out_channels(size: str) -> list[int]:
    _, widen, last = MMYOLO_SIZES[size]
    return [_make_divisible(c, widen) for c in (256, 512, last)]


def mmyolo_head_module_state_shapes(
    size: str, num_classes: int = NUM_CLASSES, reg_max: int = REG_MAX
) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of MMYOLO's YOLOv8HeadModule of ``size`` (below ``bbox_head.head_module.``).
    ``proj`` is a non-persistent buffer, so it is not a key."""
    _, widen, last = MMYOLO_SIZES[size]
    in_channels = [_make_divisible(c, widen) for c in (256, 512, last)]
    reg_out = max(16, in_channels[0] // 4, reg_max * 4)
    cls_out = max(in_channels[0], num_classes)
    shapes: dict[str, tuple[int, ...]] = {}
    for level, in_ch in enumerate(in_channels):
        for branch, mid, final in (("reg_preds", reg_out, 4 * reg_max), ("cls_preds", cls_out, num_classes)):
            shapes |= _conv_module(f"{branch}.{level}.0", mid, in_ch, 3)
            shapes |= _conv_module(f"{branch}.{level}.1", mid, mid, 3)
            shapes[f"{branch}.{level}.2.weight"] = (final, mid, 1, 1)
            shapes[f"{branch}.{level}.2.bias"] = (final,)
    return shapes


def mmyolo_detector_shapes(size: str, num_classes: int = NUM_CLASSES) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of MMYOLO's whole ``YOLODetector`` (YOLOv8CSPDarknet + YOLOv8PAFPN +
    YOLOv8Head) of ``size``: the only persistent state is the three modules' (the losses, prior
    generator and data preprocessor hold none)."""
    from tests.models.mmyolo_layout import mmyolo_state_shapes

    return (
        {f"backbone.{k}": v for k, v in mmyolo_state_shapes(size).items()}
        | {f"neck.{k}": v for k, v in mmyolo_neck_state_shapes(size).items()}
        | {
            f"bbox_head.head_module.{k}": v
            for k, v in mmyolo_head_module_state_shapes(size, num_classes).items()
        }
    )
