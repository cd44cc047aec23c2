"""Config of the ``yolov8`` head: MMYOLO's YOLOv8 head and loss, with MMYOLO's defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vfmkd_ray.reads import ReaderConfig, Reads


class YOLOv8HeadConfig(ReaderConfig):
    """YOLOv8's decoupled head (MMYOLO ``YOLOv8HeadModule``) on the ``yolov8_pafpn`` neck: DFL box
    regression, task-aligned assignment, BCE class loss, CIoU box loss and DFL loss."""

    type: Literal["yolov8"] = "yolov8"
    weight: float = Field(1.0, ge=0, description="weight of the head's loss in the total")
    num_classes: int = Field(ge=1, description="must equal the number of categories of the COCO file")
    reg_max: int = Field(16, ge=2, description="bins of the distribution focal loss per box side")
    max_objects: int = Field(100, ge=1, description="ground-truth boxes kept per image")
    loss_cls_weight: float = Field(0.5, ge=0)
    loss_bbox_weight: float = Field(7.5, ge=0)
    loss_dfl_weight: float = Field(1.5 / 4, ge=0, description="MMYOLO divides the official 1.5 by 4")
    topk: int = Field(10, ge=1, description="task-aligned assigner: candidates per ground-truth box")
    alpha: float = Field(0.5, ge=0, description="task-aligned assigner: class-score exponent")
    beta: float = Field(6.0, ge=0, description="task-aligned assigner: IoU exponent")
    eps: float = Field(1e-9, gt=0)
    score_threshold: float = Field(0.001, ge=0, lt=1, description="inference: boxes below are dropped")
    nms_iou: float = Field(0.7, gt=0, le=1)
    nms_pre: int = Field(30000, ge=1, description="inference: best boxes kept before NMS")
    max_detections: int = Field(300, ge=1)

    def reads(self) -> Reads:
        return Reads(boxes=True, classes=self.num_classes)
