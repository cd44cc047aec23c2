"""Models rebuilt from what a run wrote: the architecture from the run's config, the weights from
its file (``best_model.pth`` or a training checkpoint), loaded strictly.

This is the one module above ``models.build`` that turns run files into models: ``vfmkd eval``,
export, a ``run`` teacher and a head distilled from a trained run (YOLC's ``kd.teacher_ckpt``, which
receives ``load_frozen_model`` through its build context) all come here. ``run_files`` only reads
and writes the files.
"""

from __future__ import annotations

from vfmkd_ray import run_files
from vfmkd_ray.config import ConfigError, ExperimentConfig, validate_config
from vfmkd_ray.models.build import ModelParts, build_model
from vfmkd_ray.models.multitask import FrozenModel, MultiTaskModel
from vfmkd_ray.run_files import RunFileError


def model_config(uri: str) -> ExperimentConfig:
    """The validated config of the run that wrote ``uri``: its ``resolved_config.yaml`` (beside the
    file or a directory or two up), or else the config embedded in a ``best_model.pth``, which
    means reading the file's weights too."""
    try:
        raw = run_files.find_run_config(uri)
    except RunFileError:
        _, raw = run_files.read_model_file(uri)
    return _validated(raw, uri)


def untrained_model(uri: str) -> MultiTaskModel:
    """The architecture of the run that wrote ``uri``, built from its config without reading the
    file's weights (on the meta device when built under it: a run teacher's shapes)."""
    cfg = model_config(uri)
    return build_model(cfg, load_weights=False, load_run_model=load_frozen_model).model


def load_model(uri: str) -> tuple[ModelParts, ExperimentConfig]:
    """Rebuilds the model a run file holds (from its embedded config) and loads it strictly."""
    state, raw = run_files.read_model_file(uri)
    cfg = _validated(raw, uri)
    parts = build_model(cfg, load_weights=False, load_run_model=load_frozen_model)
    missing, unexpected = parts.model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RunFileError(
            f"{uri} does not fit the model its config describes: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return parts, cfg


def load_frozen_model(uri: str) -> FrozenModel:
    """The model of a run file, frozen: a teacher that is a trained run."""
    parts, _ = load_model(uri)
    return FrozenModel(parts.model)


def _validated(raw: dict, uri: str) -> ExperimentConfig:
    try:
        return validate_config(raw)
    except ConfigError as err:
        raise RunFileError(f"the config of {uri} is not valid today: {err}") from None
