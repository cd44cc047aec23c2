"""What ``vfmkd export`` reads: a training checkpoint, a ``{"backbone": state_dict}`` file or a bare
state dict (local or any fsspec URI), and which student it belongs to.

Files load with ``weights_only=True``; anything else is refused with an error naming the file.
The student comes from ``--config``/``--student``, or from the ``resolved_config.yaml`` that every
run directory holds next to its checkpoints.
"""

from __future__ import annotations

import io

import torch
import yaml
from safetensors.torch import load as load_safetensors

from vfmkd_ray import storage
from vfmkd_ray.models.students import StudentBackbone, StudentConfig, build_student
from vfmkd_ray.train.run_files import RESOLVED_CONFIG
from vfmkd_ray.train.state import STATE_FILE

STUDENT_PREFIX = "student."  # the student inside the Distiller of a training checkpoint


class ExportError(ValueError):
    """An input or export the product refuses; the message names the file and the reason."""


def read_backbone_state(uri: str) -> tuple[dict[str, torch.Tensor], str]:
    """The backbone state dict stored at ``uri`` and what kind of file it was.

    A directory is a Ray Train checkpoint (its ``training_state.pt`` is read).
    """
    if storage.is_dir(uri):
        uri = storage.join(uri, STATE_FILE)
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise ExportError(f"checkpoint not found: {uri}") from None
    if uri.endswith(".safetensors"):
        try:
            return load_safetensors(data), "safetensors state dict"
        except Exception as err:
            raise ExportError(f"{uri} is not a readable safetensors file: {err}") from None
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ExportError(f"{uri} is not a loadable checkpoint (truncated or not PyTorch?): {err}") from None
    if isinstance(payload, dict) and isinstance(payload.get("distiller"), dict):
        student = {
            k[len(STUDENT_PREFIX) :]: v
            for k, v in payload["distiller"].items()
            if k.startswith(STUDENT_PREFIX)
        }
        return student, "training checkpoint"
    if isinstance(payload, dict) and isinstance(payload.get("backbone"), dict):
        return payload["backbone"], '{"backbone": state_dict} file'
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload, "state dict"
    keys = list(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
    raise ExportError(
        f"{uri} holds neither a training checkpoint, a {{'backbone': state_dict}} file nor a state dict "
        f"(found {keys})"
    )


def find_student_config(uri: str) -> StudentConfig:
    """The student of the run that wrote ``uri``: the ``resolved_config.yaml`` beside it or one
    directory up (a checkpoint directory sits inside its run directory)."""
    parent = uri.rstrip("/").rsplit("/", 1)[0]
    for directory in (uri.rstrip("/"), parent, parent.rsplit("/", 1)[0]):
        candidate = storage.join(directory, RESOLVED_CONFIG)
        if storage.exists(candidate):
            # Only the student section: the rest of an older run's config may predate today's schema.
            raw = yaml.safe_load(storage.read_text(candidate)) or {}
            try:
                return StudentConfig.model_validate(raw.get("student", {}))
            except ValueError as err:
                raise ExportError(f"{candidate} has no usable student section: {err}") from None
    raise ExportError(
        f"no {RESOLVED_CONFIG} next to {uri}: say which student it is with --config CONFIG "
        "or --student NAME [--size S]"
    )


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
