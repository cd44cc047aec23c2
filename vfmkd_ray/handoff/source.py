"""What ``vfmkd export`` reads: any file a run writes (through ``run_files``: a training
checkpoint, ``best_model.pth``, the best backbone), a bare state dict, a plain timm state dict or an
MMEngine checkpoint (MMYOLO's, MMDetection's; keys read by ``students.weight_layouts``), local or any
fsspec URI, and which student it belongs to.

The student comes from ``--config``/``--student``, or from the ``resolved_config.yaml`` that every
run directory holds next to its checkpoints.
"""

from __future__ import annotations

from vfmkd_ray import run_files
from vfmkd_ray.models.students import StudentConfig, build_student
from vfmkd_ray.models.students.base import StudentBackbone
from vfmkd_ray.models.students.weight_layouts import WeightsReport, adapt_weights


class ExportError(ValueError):
    """An input or export the product refuses; the message names the file and the reason."""


def read_backbone_state(uri: str) -> tuple[dict, str]:
    """The backbone state dict in any file a run writes (training checkpoint, best model, best
    backbone) or a bare state dict, and what kind of file it was; an MMEngine checkpoint comes back
    whole (``adapt_weights`` takes its ``backbone.*`` out)."""
    try:
        return run_files.read_backbone_state(uri)
    except run_files.RunFileError as err:
        raise ExportError(str(err)) from None


def find_student_config(uri: str) -> StudentConfig:
    """The student of the run that wrote ``uri`` (its ``resolved_config.yaml``)."""
    try:
        raw = run_files.find_run_config(uri)
    except run_files.RunFileError as err:  # none there, or one that is refused (run storage is shared)
        raise ExportError(
            f"{err}: say which student it is with --config CONFIG or --student NAME [--size S]"
        ) from None
    # Only the student section: the rest of an older run's config may predate today's schema.
    try:
        return StudentConfig.model_validate(raw.get("student", {}))
    except ValueError as err:
        raise ExportError(f"the run config of {uri} has no usable student section: {err}") from None


def load_student(uri: str, student_cfg: StudentConfig) -> tuple[StudentBackbone, str, WeightsReport]:
    """A fresh student with the weights at ``uri``, the kind of file and how its keys were read;
    refuses a file of another architecture."""
    payload, kind = read_backbone_state(uri)
    student = build_student(student_cfg.model_copy(update={"weights": None})).eval()
    try:
        state, report = adapt_weights(payload, student, f"{uri} ({kind})", student_cfg.label)
    except ValueError as err:
        raise ExportError(str(err)) from None
    student.load_state_dict(state, strict=True)
    return student, kind, report
