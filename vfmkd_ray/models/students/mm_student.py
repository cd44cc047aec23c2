"""Any OpenMMLab registry backbone as a student: ``student.name: mm/<scope>.<Type>`` with
``student.mm`` holding the rest of the backbone dict as MMDetection/MMYOLO configs write it.

The registry class sits under ``body`` (as timm students do), so its own key names follow
``body.`` and an MMEngine checkpoint's ``backbone.*`` keys map onto it one to one. Its
``feature_info`` is measured by one forward on a small input: the channels of each output and the
stride that turns the input size into the output size.
"""

from __future__ import annotations

from typing import Any

import torch

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.students.base import StudentBackbone
from vfmkd_ray.models.students.config import MM_PREFIX
from vfmkd_ray.openmmlab import SCOPES, mm_registry

PROBE_SIZE = 256  # divisible by every stride up to 64 and enough pixels for stride-64 outputs


def registry_type(name: str) -> str:
    """``mm/mmdet.ResNet`` -> ``mmdet.ResNet``; ValueError for a type without a known scope."""
    type_name = name.removeprefix(MM_PREFIX)
    scope, _, cls = type_name.partition(".")
    if scope not in SCOPES or not cls:
        raise ValueError(
            f"student {name!r}: an OpenMMLab student is mm/<scope>.<Type> with scope one of {list(SCOPES)}, "
            "e.g. mm/mmdet.ResNet or mm/mmyolo.YOLOv8CSPDarknet"
        )
    return type_name


class MMStudent(StudentBackbone):
    """``MODELS.build({"type": <scope>.<Type>, **mm})``; its forward's tuple of maps is the
    student's."""

    def __init__(self, name: str, mm: dict[str, Any] | None = None) -> None:
        super().__init__()
        type_name = registry_type(name)
        models = mm_registry(f"student {name!r}")
        if models.get(type_name) is None:
            raise ValueError(f"student {name!r}: the OpenMMLab registry has no backbone {type_name!r}")
        try:
            self.body = models.build({**(mm or {}), "type": type_name})
        except (TypeError, ValueError, KeyError, AssertionError) as err:
            raise ValueError(f"student {name!r} with student.mm={mm}: {type(err).__name__}: {err}") from None
        self.type_name = type_name
        self.feature_info = self._measure_levels(name)

    def _measure_levels(self, name: str) -> FeatureInfo:
        was_training = self.body.training
        self.body.eval()  # BatchNorm in training mode refuses a 1x1 map of one image
        try:
            with torch.no_grad():
                outputs = self._as_tuple(self.body(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE)))
        finally:
            self.body.train(was_training)
        levels = []
        for index, out in enumerate(outputs):
            if out.dim() != 4 or PROBE_SIZE % out.shape[-1]:
                raise ValueError(
                    f"student {name!r}: output {index} has shape {tuple(out.shape)}; a student backbone "
                    "returns NCHW maps at strides dividing the input"
                )
            levels.append(FeatureLevel(int(out.shape[1]), PROBE_SIZE // int(out.shape[-1]), f"out{index}"))
        return FeatureInfo(levels)

    @staticmethod
    def _as_tuple(outputs: Any) -> tuple[torch.Tensor, ...]:
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)

    def forward(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._as_tuple(self.body(images_BCHW))
