"""Task heads by config ``type``: ``yolov8`` (MMYOLO's YOLOv8 detection head), ``yolc`` (YOLC-style
tiny-object detection) and ``sam_mask`` (SAM's promptable mask decoder)."""

from __future__ import annotations

from vfmkd_ray.heads.base import DataNeeds, HeadContext, TaskHead
from vfmkd_ray.heads.config import HeadConfig
from vfmkd_ray.heads.sam_mask.head import SamMaskHead
from vfmkd_ray.heads.yolc.head import YOLCHead
from vfmkd_ray.heads.yolov8.head import YOLOv8Head
from vfmkd_ray.registry import Registry

HEADS: Registry[type[TaskHead]] = Registry("head")
HEADS.add("yolov8", YOLOv8Head)
HEADS.add("yolc", YOLCHead)
HEADS.add("sam_mask", SamMaskHead)


def build_heads(cfg: dict[str, HeadConfig], context: HeadContext) -> dict[str, TaskHead]:
    """One built head per ``heads`` entry; errors name the head."""
    heads = {}
    for name, head_cfg in cfg.items():
        try:
            heads[name] = HEADS.get(head_cfg.type)(name, head_cfg, context)
        except ValueError as err:
            raise ValueError(f"heads.{name} ({head_cfg.type}): {err}") from None
    return heads


def data_needs(heads: dict[str, TaskHead]) -> DataNeeds:
    needs = DataNeeds()
    for head in heads.values():
        needs = needs.merge(head.needs())
    return needs


__all__ = ["HEADS", "DataNeeds", "HeadConfig", "HeadContext", "TaskHead", "build_heads", "data_needs"]
