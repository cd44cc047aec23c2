"""MMYOLO's ``YOLOv8CSPDarknet`` state-dict layout, derived by hand from its config formulas (mmyolo
cannot be installed next to current torch), for tests that check key names and shapes against it."""

from __future__ import annotations

# MMYOLO YOLOv8CSPDarknet, computed by hand from its config formulas:
# stem width, (stage widths), (CSP blocks per stage).
MMYOLO_LAYOUT = {
    "n": (16, (32, 64, 128, 256), (1, 2, 2, 1)),
    "s": (32, (64, 128, 256, 512), (1, 2, 2, 1)),
    "m": (48, (96, 192, 384, 576), (2, 4, 4, 2)),
    "l": (64, (128, 256, 512, 512), (3, 6, 6, 3)),
    "x": (80, (160, 320, 640, 640), (3, 6, 6, 3)),
}


def _mmyolo_conv_shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Conv weight shapes of MMYOLO's YOLOv8CSPDarknet, keyed like its state dict."""
    stem, widths, blocks = MMYOLO_LAYOUT[size]
    shapes = {"stem": (stem, 3, 3, 3)}
    in_ch = stem
    for index, (out_ch, num_blocks) in enumerate(zip(widths, blocks, strict=True), start=1):
        mid = out_ch // 2
        shapes[f"stage{index}.0"] = (out_ch, in_ch, 3, 3)
        shapes[f"stage{index}.1.main_conv"] = (2 * mid, out_ch, 1, 1)
        shapes[f"stage{index}.1.final_conv"] = (out_ch, (2 + num_blocks) * mid, 1, 1)
        for block in range(num_blocks):
            shapes[f"stage{index}.1.blocks.{block}.conv1"] = (mid, mid, 3, 3)
            shapes[f"stage{index}.1.blocks.{block}.conv2"] = (mid, mid, 3, 3)
        in_ch = out_ch
    last = widths[-1]
    shapes["stage4.2.conv1"] = (last // 2, last, 1, 1)
    shapes["stage4.2.conv2"] = (last, last * 2, 1, 1)
    return shapes


def mmyolo_state_shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of MMYOLO's YOLOv8CSPDarknet of ``size`` and its shape."""
    expected = {}
    for module, conv_shape in _mmyolo_conv_shapes(size).items():
        channels = conv_shape[0]
        expected[f"{module}.conv.weight"] = conv_shape
        for stat in ("weight", "bias", "running_mean", "running_var"):
            expected[f"{module}.bn.{stat}"] = (channels,)
        expected[f"{module}.bn.num_batches_tracked"] = ()
    return expected
