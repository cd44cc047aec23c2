"""The key layouts a student's weights are read in, in one place for ``student.weights`` and
``vfmkd export --checkpoint``: one adapter per external format, as torchtitan's
``state_dict_adapter``. Recognised in this order:

- an MMEngine checkpoint (``{"state_dict": ..., "meta": ...}``: MMYOLO, MMDetection, and what
  ``vfmkd export --format mmyolo/mmdet`` writes): its ``backbone.*`` keys, or
  ``backbone.timm_model.*`` (mmpretrain's ``TIMMBackbone``) for timm students; the neck, the head
  and everything else are dropped.
- a plain timm state dict (``timm.create_model(name).state_dict()``, a timm or Hugging Face hub
  ``.bin``/``.safetensors``) for a ``timm/<name>`` student, told by the absence of ``body.`` keys:
  the full model's key names (``timm_keys``) mapped onto the ``features_only`` model; what that
  model lacks (the classifier head, a final norm or conv head) is dropped.
- a plain state dict of an ``mm/`` student's registry class (its own key names, as torchvision's
  ImageNet ResNets or an MMEngine ``backbone`` sub-dict have them) when no key starts with ``body.``:
  what the class lacks (a classifier ``fc``) is dropped.
- otherwise the student's own layout, what a run writes: exactly ``student.state_dict()``'s keys.

Every key of the student must be in the file with the student's shape, else the error names the
file and the keys; in the student's own layout an extra key is an error too (another architecture).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from vfmkd_ray.models.students.base import StudentBackbone
from vfmkd_ray.models.students.mm_student import MMStudent
from vfmkd_ray.models.students.timm_keys import features_to_model_keys
from vfmkd_ray.models.students.timm_student import TIMM_BODY, TimmStudent

MMENGINE_BACKBONE = "backbone."
MMPRETRAIN_TIMM = "backbone.timm_model."  # mmpretrain's TIMMBackbone holds the timm model here
OWN_LAYOUT = "the student's own layout"
SHOWN_KEYS = 3  # keys named in a report line or an error


@dataclass(frozen=True)
class WeightsReport:
    """How a file's keys were read into a student; key names are the file's own."""

    source: str  # the file, e.g. "w.pth" or "w.pth (state dict)"
    layout: str  # e.g. "timm hgnetv2_b4 state dict"
    num_matched: int
    missing: tuple[str, ...] = ()
    misshaped: tuple[str, ...] = ()  # "key (file shape) vs (student shape)"
    unexpected: tuple[str, ...] = ()  # in the file, not in the student: dropped

    @property
    def ok(self) -> bool:
        return self.num_matched > 0 and not self.missing and not self.misshaped

    def describe(self) -> str:
        line = (
            f"{self.source} read as {self.layout}: {self.num_matched} keys matched, "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected"
        )
        if self.unexpected:
            more = ", ..." if len(self.unexpected) > SHOWN_KEYS else ""
            line += f" (dropped: {', '.join(self.unexpected[:SHOWN_KEYS])}{more})"
        return line


def adapt_weights(
    payload: Mapping, student: StudentBackbone, source: str, target: str
) -> tuple[dict[str, torch.Tensor], WeightsReport]:
    """The student's state dict out of ``payload`` (a file's contents) in any layout above.

    Args:
        payload: a state dict, or an MMEngine checkpoint (``{"state_dict": ..., "meta": ...}``).
        student: the student the weights are for; only its key names and shapes are read.
        source: names the file in the report and in errors.
        target: names the student in errors, e.g. ``yolov8_cspdarknet-n``.

    Raises:
        ValueError: a key of the student is missing or mis-shaped (or, in the student's own
            layout, the file has keys the student lacks).
    """
    layout, file_keys, state = _recognise(payload, student)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    matched, missing, misshaped = 0, [], []
    for key, value in student.state_dict().items():
        name = file_keys[key]
        if name not in tensors:
            missing.append(name)
        elif tensors[name].shape != value.shape:
            misshaped.append(f"{name} {tuple(tensors[name].shape)} vs {tuple(value.shape)}")
        else:
            matched += 1
    used = set(file_keys.values())
    unexpected = tuple(k for k in state if k not in used)
    report = WeightsReport(source, layout, matched, tuple(missing), tuple(misshaped), unexpected)
    if not report.ok or (layout == OWN_LAYOUT and unexpected):
        raise ValueError(_refusal(report, target))
    return {key: tensors[name] for key, name in file_keys.items()}, report


def _recognise(payload: Mapping, student: StudentBackbone) -> tuple[str, dict[str, str], Mapping]:
    """The layout's name, student key -> file key, and the mapping that holds the file keys."""
    keys = list(student.state_dict())
    is_timm = isinstance(student, TimmStudent)
    if isinstance(payload.get("state_dict"), Mapping):
        prefix = MMPRETRAIN_TIMM if is_timm else MMENGINE_BACKBONE
        file_keys = {k: prefix + k.removeprefix(TIMM_BODY) for k in keys}
        return f"MMEngine checkpoint ({prefix}*)", file_keys, payload["state_dict"]
    has_body_keys = any(str(k).startswith(TIMM_BODY) for k in payload)
    if isinstance(student, MMStudent) and not has_body_keys:
        file_keys = {k: k.removeprefix(TIMM_BODY) for k in keys}
        return f"plain {student.type_name} state dict", file_keys, payload
    if is_timm and not has_body_keys:
        full = features_to_model_keys(student.model_name, [k.removeprefix(TIMM_BODY) for k in keys])
        file_keys = {k: full[k.removeprefix(TIMM_BODY)] for k in keys}
        return f"timm {student.model_name} state dict", file_keys, payload
    return OWN_LAYOUT, {k: k for k in keys}, payload


def _refusal(report: WeightsReport, target: str) -> str:
    hint = "another architecture" if report.layout == OWN_LAYOUT else "another model or variant"
    return (
        f"{report.source} does not fit {target} (read as {report.layout}): "
        f"{len(report.missing)} missing keys {list(report.missing[:SHOWN_KEYS])}, "
        f"{len(report.misshaped)} mis-shaped {list(report.misshaped[:SHOWN_KEYS])}, "
        f"{len(report.unexpected)} unexpected {list(report.unexpected[:SHOWN_KEYS])}; is it a file of {hint}?"
    )
