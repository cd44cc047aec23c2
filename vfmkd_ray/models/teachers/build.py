"""The teacher registry (``TEACHERS``: every name a config may give) and what builds a teacher from
its config: the structure on the meta device (``describe_teacher``, ``teacher_shapes``) or the
loaded, frozen model (``build_teacher``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from vfmkd_ray.models.checkpoint_io import load_weights, weights_sha256
from vfmkd_ray.models.teachers.base import RANDOM_WEIGHTS, FrozenTeacher
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.models.teachers.dino import DINO_SPECS, DinoTeacher
from vfmkd_ray.models.teachers.run import RUN_TEACHER, RunTeacher
from vfmkd_ray.models.teachers.sam import SAM_SPECS, SamTeacher
from vfmkd_ray.models.teachers.sam2 import SAM2_TRUNKS, Sam2Teacher
from vfmkd_ray.registry import Registry

TEACHERS: Registry[Callable[[TeacherConfig], FrozenTeacher]] = Registry("teacher")
for _family, _names in (
    (SamTeacher, SAM_SPECS),
    (Sam2Teacher, SAM2_TRUNKS),
    (DinoTeacher, DINO_SPECS),
):
    for _name in _names:
        TEACHERS.add(_name, lambda cfg, family=_family: family(cfg.name, cfg.input_size))
TEACHERS.add(RUN_TEACHER, RunTeacher)


def describe_teacher(cfg: TeacherConfig) -> FrozenTeacher:
    """The teacher's structure (names, ``feature_info``, shapes) on the meta device: no memory, no
    weights. ``weights_id`` is filled in, so drivers can check a store without loading the model."""
    builder = TEACHERS.get(cfg.name)
    _require_weights(cfg)
    with torch.device("meta"):
        teacher = builder(cfg)
    teacher.select_layers(cfg.layers)
    if cfg.weights == RANDOM_WEIGHTS:
        teacher.weights_id = _random_id(cfg)
    else:
        teacher.weights_id = f"sha256:{cfg.sha256 or weights_sha256(cfg.weights)}"
    return teacher


def teacher_shapes(cfgs: dict[str, TeacherConfig]) -> dict[str, dict[str, tuple[int, int, int]]]:
    """Alias -> selected layer -> (C, H, W), from each teacher's structure on the meta device (no
    weights read, unlike ``describe_teacher``, which also hashes them)."""
    shapes = {}
    for alias, cfg in cfgs.items():
        with torch.device("meta"):
            teacher = TEACHERS.get(cfg.name)(cfg)
        shapes[alias] = teacher.select_layers(cfg.layers).feature_shapes()
    return shapes


def build_teacher(cfg: TeacherConfig) -> FrozenTeacher:
    """Builds, loads and freezes the teacher named in ``cfg``."""
    builder = TEACHERS.get(cfg.name)
    _require_weights(cfg)
    if cfg.weights == RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.random_seed)
            teacher = builder(cfg)
        teacher.weights_id = _random_id(cfg)
    else:
        teacher = builder(cfg)
        loaded = load_weights(cfg.weights, cfg.sha256)
        teacher.load_checkpoint(loaded.state_dict)
        teacher.weights_id = f"sha256:{loaded.sha256}"
    return teacher.select_layers(cfg.layers).freeze()


def _require_weights(cfg: TeacherConfig) -> None:
    if cfg.weights is None:
        raise ValueError(
            f"teacher.weights is not set for {cfg.name}: give a checkpoint path or URI, "
            "or 'random' to distill from a randomly initialised teacher"
        )


def _random_id(cfg: TeacherConfig) -> str:
    return f"random(seed={cfg.random_seed})"


__all__ = [
    "TEACHERS",
    "build_teacher",
    "describe_teacher",
    "teacher_shapes",
]
