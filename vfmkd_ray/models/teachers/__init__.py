"""Frozen teachers by name: SAM ViT-B/L/H, SAM 2 Hiera-T/S/B+/L and DINOv2 ViT-S/B/L."""

from __future__ import annotations

from collections.abc import Callable

import torch

from vfmkd_ray.models.checkpoint_io import load_weights, weights_sha256
from vfmkd_ray.models.teachers.base import RANDOM_WEIGHTS, FrozenTeacher
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.models.teachers.dinov2 import DINOV2_TIMM_NAMES, Dinov2Teacher
from vfmkd_ray.models.teachers.sam import SAM_SPECS, SamTeacher
from vfmkd_ray.models.teachers.sam2 import SAM2_TRUNKS, Sam2Teacher
from vfmkd_ray.registry import Registry

TEACHERS: Registry[Callable[[str, int], FrozenTeacher]] = Registry("teacher")
for _name in SAM_SPECS:
    TEACHERS.add(_name, SamTeacher)
for _name in SAM2_TRUNKS:
    TEACHERS.add(_name, Sam2Teacher)
for _name in DINOV2_TIMM_NAMES:
    TEACHERS.add(_name, Dinov2Teacher)


def describe_teacher(cfg: TeacherConfig) -> FrozenTeacher:
    """The teacher's structure (names, ``feature_info``, shapes) on the meta device: no memory, no
    weights. ``weights_id`` is filled in, so drivers can check a store without loading the model."""
    builder = TEACHERS.get(cfg.name)
    _require_weights(cfg)
    with torch.device("meta"):
        teacher = builder(cfg.name, cfg.input_size)
    teacher.select_layers(cfg.layers)
    if cfg.weights == RANDOM_WEIGHTS:
        teacher.weights_id = _random_id(cfg)
    else:
        teacher.weights_id = f"sha256:{cfg.sha256 or weights_sha256(cfg.weights)}"
    return teacher


def build_teacher(cfg: TeacherConfig) -> FrozenTeacher:
    """Builds, loads and freezes the teacher named in ``cfg``."""
    builder = TEACHERS.get(cfg.name)
    _require_weights(cfg)
    if cfg.weights == RANDOM_WEIGHTS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.random_seed)
            teacher = builder(cfg.name, cfg.input_size)
        teacher.weights_id = _random_id(cfg)
    else:
        teacher = builder(cfg.name, cfg.input_size)
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


__all__ = ["TEACHERS", "FrozenTeacher", "TeacherConfig", "build_teacher", "describe_teacher"]
