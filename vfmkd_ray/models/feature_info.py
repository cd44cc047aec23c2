"""``FeatureInfo``: what a backbone's feature levels look like, so nothing hard-codes channels.

Follows timm's ``FeatureInfo`` (``timm/models/_features.py``): ``channels()`` and ``reduction()``
return one entry per output level, in forward order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureLevel:
    channels: int
    reduction: int
    module: str = ""


class FeatureInfo:
    """The output levels of a backbone: channel count and stride of each."""

    def __init__(self, levels: Sequence[FeatureLevel]) -> None:
        if not levels:
            raise ValueError("a backbone must expose at least one feature level")
        self.levels = tuple(levels)

    def channels(self) -> list[int]:
        return [level.channels for level in self.levels]

    def reduction(self) -> list[int]:
        return [level.reduction for level in self.levels]

    def index_of_stride(self, stride: int) -> int:
        """Index of the first level with ``stride``; ValueError listing the strides otherwise."""
        for index, level in enumerate(self.levels):
            if level.reduction == stride:
                return index
        raise ValueError(f"no feature level with stride {stride}; available: {self.reduction()}")

    def __len__(self) -> int:
        return len(self.levels)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()})"
