"""Necks by config ``type``: built from the backbone's ``feature_info`` (and the student's size)."""

from __future__ import annotations

from collections.abc import Callable

from vfmkd_ray.models.feature_info import FeatureInfo
from vfmkd_ray.models.necks.base import Neck
from vfmkd_ray.models.necks.config import NeckConfig, Stride4NeckConfig, YOLOv8PAFPNConfig
from vfmkd_ray.models.necks.stride4 import StrideFourNeck
from vfmkd_ray.models.necks.yolov8_pafpn import YOLOv8PAFPN, pafpn_deepen_factor
from vfmkd_ray.models.students.config import StudentConfig
from vfmkd_ray.registry import Registry

NECKS: Registry[Callable[..., Neck]] = Registry("neck")


@NECKS.register("yolov8_pafpn")
def _yolov8_pafpn(cfg: YOLOv8PAFPNConfig, backbone: FeatureInfo, student: StudentConfig) -> Neck:
    return YOLOv8PAFPN(backbone, pafpn_deepen_factor(cfg, student), cfg.num_csp_blocks)


@NECKS.register("stride4")
def _stride4(cfg: Stride4NeckConfig, backbone: FeatureInfo, student: StudentConfig) -> Neck:
    return StrideFourNeck(backbone, cfg.channels)


def build_neck(cfg: NeckConfig, backbone: FeatureInfo, student: StudentConfig) -> Neck:
    try:
        return NECKS.get(cfg.type)(cfg, backbone, student)
    except ValueError as err:
        raise ValueError(f"neck ({cfg.type}): {err}") from None


__all__ = ["NECKS", "Neck", "NeckConfig", "build_neck"]
