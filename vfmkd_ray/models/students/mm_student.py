"""Any OpenMMLab registry backbone as a student: ``student.name: mm/<scope>.<Type>`` with
``student.mm`` holding the rest of the backbone dict as MMDetection/MMYOLO configs write it, built
by the mm student family (``mm_family``).

The registry class sits under ``body`` (as timm students do), so its own key names follow
``body.`` and an MMEngine checkpoint's ``backbone.*`` keys map onto it one to one. The class's
own ``init_weights`` runs (mmdet's ResNet: Kaiming convolutions, ``zero_init_residual``), with no
``init_cfg``/``pretrained`` (the config refuses them: weights come from ``student.weights``). Its
``feature_info`` is measured by one forward on a small input, on the CPU even when the student is
built on the meta device (mmcv's compiled ops have no meta kernels).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vfmkd_ray.models.feature_info import FeatureInfo, FeatureLevel
from vfmkd_ray.models.students.base import StudentBackbone
from vfmkd_ray.models.students.mm_family import registry_type
from vfmkd_ray.openmmlab import mm_registry

PROBE_SIZE = 256  # divisible by every stride up to 64 and enough pixels for stride-64 outputs


class MMStudent(StudentBackbone):
    """``MODELS.build({"type": <scope>.<Type>, **mm})``; its forward's tuple of maps is the
    student's."""

    def __init__(self, name: str, mm: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.type_name = registry_type(name)
        self._spec = {**(mm or {}), "type": self.type_name}
        self._label = f"student {name!r} with student.mm={mm or {}}"
        models = mm_registry(f"student {name!r}")
        if models.get(self.type_name) is None:
            raise ValueError(f"student {name!r}: the OpenMMLab registry has no backbone {self.type_name!r}")
        self.body = self._build(models)
        self.feature_info = self._measure_levels(models)

    def _build(self, models: Any) -> nn.Module:
        try:
            body = models.build(self._spec)
            if not any(p.is_meta for p in body.parameters()):  # a meta build is for shapes only
                body.init_weights()
        except Exception as err:  # the class's own checks raise anything from KeyError to IndexError
            raise ValueError(f"{self._label}: {type(err).__name__}: {err}") from None
        return body

    def _measure_levels(self, models: Any) -> FeatureInfo:
        on_meta = any(p.is_meta for p in self.body.parameters())
        if on_meta:
            with torch.device("cpu"):
                probe = self._build(models)
        else:
            probe = self.body
        was_training = probe.training
        probe.eval()  # BatchNorm in training mode refuses a 1x1 map of one image
        try:
            with torch.device("cpu"), torch.no_grad():
                outputs = self._as_tuple(probe(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE)))
        except Exception as err:
            raise ValueError(
                f"{self._label}: a {PROBE_SIZE} px forward failed: {type(err).__name__}: {err}"
            ) from None
        finally:
            probe.train(was_training)
        levels = []
        for index, out in enumerate(outputs):
            if not isinstance(out, torch.Tensor) or out.dim() != 4 or PROBE_SIZE % out.shape[-1]:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"{self._label}: output {index} is {shape}; a student backbone returns NCHW maps at "
                    "strides dividing the input"
                )
            levels.append(FeatureLevel(int(out.shape[1]), PROBE_SIZE // int(out.shape[-1]), f"out{index}"))
        return FeatureInfo(levels)

    @staticmethod
    def _as_tuple(outputs: Any) -> tuple[Any, ...]:
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)

    def forward(self, images_BCHW: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._as_tuple(self.body(images_BCHW))
