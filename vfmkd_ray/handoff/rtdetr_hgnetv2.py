"""RT-DETRv2's ``HGNetv2`` backbone: its variants, its state-dict layout, and the key mapping from
timm's ``hgnetv2_b*``.

RT-DETRv2 (``rtdetrv2_pytorch/src/nn/backbone/hgnetv2.py``) builds variants L, X and H, the
PP-HGNetV2 B4, B5 and B6 architectures that timm names ``hgnetv2_b4/b5/b6`` (both without the
learnable affine blocks). ``layout`` derives RT-DETRv2's key names and shapes from its arch configs
and construction rules, independently of timm, so the check of an export does not trust the
mapping it checks.
"""

from __future__ import annotations

import re

# name -> (stem channels, stages: in, mid, out, blocks, downsample, light block, kernel, layers),
# as in RT-DETRv2's HGNetv2.arch_configs.
ARCH_CONFIGS: dict[
    str, tuple[tuple[int, int, int], tuple[tuple[int, int, int, int, bool, bool, int, int], ...]]
] = {
    "L": (
        (3, 32, 48),
        (
            (48, 48, 128, 1, False, False, 3, 6),
            (128, 96, 512, 1, True, False, 3, 6),
            (512, 192, 1024, 3, True, True, 5, 6),
            (1024, 384, 2048, 1, True, True, 5, 6),
        ),
    ),
    "X": (
        (3, 32, 64),
        (
            (64, 64, 128, 1, False, False, 3, 6),
            (128, 128, 512, 2, True, False, 3, 6),
            (512, 256, 1024, 5, True, True, 5, 6),
            (1024, 512, 2048, 2, True, True, 5, 6),
        ),
    ),
    "H": (
        (3, 48, 96),
        (
            (96, 96, 192, 2, False, False, 3, 6),
            (192, 192, 512, 3, True, False, 3, 6),
            (512, 384, 1024, 6, True, True, 5, 6),
            (1024, 768, 2048, 3, True, True, 5, 6),
        ),
    ),
}
TIMM_TO_RTDETR_VARIANT = {"hgnetv2_b4": "L", "hgnetv2_b5": "X", "hgnetv2_b6": "H"}

Layout = dict[str, tuple[int, ...]]


def layout(variant: str) -> Layout:
    """RT-DETRv2 ``HGNetv2(name=variant)`` state-dict keys and shapes (without a ``backbone.``
    prefix)."""
    (in_ch, mid, out), stages = ARCH_CONFIGS[variant]
    keys: Layout = {}
    _conv_bn(keys, "stem.stem1", in_ch, mid, 3)
    _conv_bn(keys, "stem.stem2a", mid, mid // 2, 2, same_padding=True)
    _conv_bn(keys, "stem.stem2b", mid // 2, mid, 2, same_padding=True)
    _conv_bn(keys, "stem.stem3", mid * 2, mid, 3)
    _conv_bn(keys, "stem.stem4", mid, out, 1)
    for i, (stage_in, stage_mid, stage_out, blocks, downsample, light, kernel, num_layers) in enumerate(
        stages
    ):
        prefix = f"stages.{i}"
        if downsample:
            _conv_bn(keys, f"{prefix}.downsample", stage_in, stage_in, 3, groups=stage_in)
        for j in range(blocks):
            block = f"{prefix}.blocks.{j}"
            block_in = stage_in if j == 0 else stage_out
            for k in range(num_layers):
                layer_in = block_in if k == 0 else stage_mid
                if light:
                    _conv_bn(keys, f"{block}.layers.{k}.conv1", layer_in, stage_mid, 1)
                    _conv_bn(
                        keys, f"{block}.layers.{k}.conv2", stage_mid, stage_mid, kernel, groups=stage_mid
                    )
                else:
                    _conv_bn(keys, f"{block}.layers.{k}", layer_in, stage_mid, kernel)
            total = block_in + num_layers * stage_mid
            _conv_bn(keys, f"{block}.aggregation_squeeze_conv", total, stage_out // 2, 1)
            _conv_bn(keys, f"{block}.aggregation_excitation_conv", stage_out // 2, stage_out, 1)
    return keys


def out_channels(variant: str) -> list[int]:
    return [stage[2] for stage in ARCH_CONFIGS[variant][1]]


def _conv_bn(
    keys: Layout, prefix: str, cin: int, cout: int, kernel: int, groups: int = 1, same_padding: bool = False
) -> None:
    # 'same' padding wraps the conv in nn.Sequential(ZeroPad2d, Conv2d) in RT-DETRv2.
    conv = f"{prefix}.conv.1" if same_padding else f"{prefix}.conv"
    keys[f"{conv}.weight"] = (cout, cin // groups, kernel, kernel)
    for name in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{prefix}.bn.{name}"] = (cout,)
    keys[f"{prefix}.bn.num_batches_tracked"] = ()


_TIMM_RULES = (
    (re.compile(r"^stages[._](\d+)\."), r"stages.\1."),  # features_only flattens stages.0 to stages_0
    (re.compile(r"^stem\.(stem2[ab])\.conv\."), r"stem.\1.conv.1."),
    (re.compile(r"\.aggregation\.0\."), ".aggregation_squeeze_conv."),
    (re.compile(r"\.aggregation\.1\."), ".aggregation_excitation_conv."),
)


def timm_to_rtdetr(key: str) -> str:
    """A timm ``hgnetv2_b*`` key (full or ``features_only`` model) as RT-DETRv2 names it."""
    for pattern, replacement in _TIMM_RULES:
        key = pattern.sub(replacement, key)
    return key
