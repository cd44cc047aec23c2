"""What ``vfmkd export`` reads: any file a run writes (through ``run_files``: a training
checkpoint, ``best_model.pth``, the best backbone) or a bare state dict, local or any fsspec URI,
and which student it belongs to.

The student comes from ``--config``/``--student``, or from the ``resolved_config.yaml`` that every
run directory holds next to its checkpoints.
"""

from __future__ import annotations

from vfmkd_ray import run_files
from vfmkd_ray.models.students import StudentBackbone, StudentConfig, build_student


class ExportError(ValueError):
    """An input or export the product refuses; the message names the file and the reason."""


def read_backbone_state(uri: str) -> tuple[dict, str]:
    """The backbone state dict in any file a run writes (training checkpoint, best model, best
    backbone) or a bare state dict, and what kind of file it was."""
    try:
        return run_files.read_backbone_state(uri)
    except run_files.RunFileError as err:
        raise ExportError(str(err)) from None


def find_student_config(uri: str) -> StudentConfig:
    """The student of the run that wrote ``uri`` (its ``resolved_config.yaml``)."""
    try:
        raw = run_files.find_run_config(uri)
    except run_files.RunFileError:
        raise ExportError(
            f"no {run_files.RESOLVED_CONFIG} next to {uri}: say which student it is with --config CONFIG "
            "or --student NAME [--size S]"
        ) from None
    # Only the student section: the rest of an older run's config may predate today's schema.
    try:
        return StudentConfig.model_validate(raw.get("student", {}))
    except ValueError as err:
        raise ExportError(f"the run config of {uri} has no usable student section: {err}") from None


def load_student(uri: str, student_cfg: StudentConfig) -> tuple[StudentBackbone, str]:
    """A fresh student with the weights at ``uri``; refuses a file of another architecture."""
    state, kind = read_backbone_state(uri)
    student = build_student(student_cfg.model_copy(update={"weights": None})).eval()
    own = student.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or misshaped:
        raise ExportError(
            f"{uri} ({kind}) does not fit {describe_student(student_cfg)}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(misshaped)} mis-shaped "
            f"{misshaped[:3]}; is it a checkpoint of another architecture?"
        )
    student.load_state_dict(state, strict=True)
    return student, kind


def describe_student(cfg: StudentConfig) -> str:
    return cfg.name if cfg.name.startswith("timm/") else f"{cfg.name}-{cfg.size}"
