"""``LoadReport``: which keys a target model would miss or find mis-shaped in an exported file.

The matching rule is RT-DETRv2's ``_matched_state`` (``load_tuning_state``): a target key is
matched when the file has it with the same shape, ``unmatched`` when the shape differs, ``missed``
when the file lacks it. Unlike that loader, an export with any missed or unmatched key fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch


class CheckReport(Protocol):
    """What every format's check returns."""

    @property
    def ok(self) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class LoadReport:
    target: str  # what the file was loaded into, e.g. "RT-DETRv2 HGNetv2 L"
    matched: int
    missed: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # present, but another shape
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the target

    @property
    def ok(self) -> bool:
        return self.matched > 0 and not self.missed and not self.unmatched

    def describe(self) -> str:
        line = (
            f"{self.target}: {self.matched} keys matched, missed {len(self.missed)}, "
            f"unmatched {len(self.unmatched)}, unexpected {len(self.unexpected)}"
        )
        for name, keys in (("missed", self.missed), ("unmatched", self.unmatched)):
            if keys:
                line += f"\n  {name}: {keys[:8]}{' ...' if len(keys) > 8 else ''}"
        return line


def match_state(
    target: str, expected: Mapping[str, tuple[int, ...]], params: Mapping[str, torch.Tensor]
) -> LoadReport:
    """Matches ``params`` (the file) against ``expected`` (target key -> shape)."""
    missed, unmatched, matched = [], [], 0
    for key, shape in expected.items():
        if key not in params:
            missed.append(key)
        elif tuple(params[key].shape) != tuple(shape):
            unmatched.append(key)
        else:
            matched += 1
    unexpected = [key for key in params if key not in expected]
    return LoadReport(target, matched, missed, unmatched, unexpected)


def shapes_of(state: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {prefix + key: tuple(value.shape) for key, value in state.items()}
