"""Config of the ``yolc`` head: the YOLC-style tiny-object detector, its crop search (LSM), its
inference and its distillation from a frozen teacher detector."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vfmkd_ray.reads import ReaderConfig, Reads
from vfmkd_ray.schema import StrictModel


class LSMConfig(StrictModel):
    """Local scale module: where the dense clusters are, from a class-max heatmap."""

    score_threshold: float = Field(
        0.3, gt=0, lt=1, description="heatmap probability that counts as foreground"
    )
    cell: int = Field(4, ge=1, description="density grid cell, in heatmap pixels (stride-4 units)")
    min_density: float = Field(0.05, gt=0, le=1, description="foreground share a cell needs to be kept")
    top_cells: int = Field(32, ge=1, description="densest cells considered before merging")
    enlarge: float = Field(1.25, ge=1.0, description="crop side growth around its center")
    zoom: float = Field(2.0, ge=1.0, description="upsampling of a crop for the local pass")


class YOLCDistillConfig(StrictModel):
    """KD from a frozen teacher detector: its global heatmap and coarse boxes, and its refined boxes
    on the dense-cluster crops."""

    teacher_ckpt: str = Field(description="best_model.pth of a run with a yolc head")
    teacher_head: str | None = Field(None, description="that run's yolc head; default: this head's name")
    kd_weight_global_hm: float = Field(1.0, ge=0)
    kd_weight_global_coarse: float = Field(0.1, ge=0)
    kd_weight_local_refine: float = Field(0.1, ge=0)
    use_teacher_crop: bool = Field(True, description="crops from the teacher's heatmap, else the student's")
    hm_kd: Literal["mse", "kl"] = "mse"
    temperature: float = Field(1.0, gt=0)


class YOLCHeadConfig(ReaderConfig):
    """Center heatmap, coarse boxes and a deformable refine on the ``stride4`` neck; Gaussian focal,
    NWD and L1 losses; the same loss on zoomed ground-truth cluster crops; crop-refine inference."""

    type: Literal["yolc"] = "yolc"
    weight: float = Field(1.0, ge=0, description="weight of the head's loss in the total")
    num_classes: int = Field(ge=1, description="must equal the number of categories of the COCO file")
    head_channels: int = Field(64, ge=8)
    max_objects: int = Field(128, ge=1, description="ground-truth boxes kept per image")
    hm_weight: float = Field(1.0, ge=0)
    box_weight: float = Field(1.0, ge=0, description="Wasserstein (NWD) loss on coarse and refined boxes")
    l1_weight: float = Field(0.1, ge=0, description="L1 on the encoded coarse and refined boxes")
    nwd_constant: float = Field(12.8, gt=0, description="NWD normalising constant, in pixels")
    patch_size: int = Field(128, ge=16, description="canvas of a zoomed crop in the local pass")
    crop_loss_weight: float = Field(
        1.0,
        ge=0,
        description="supervised loss on zoomed crops of the ground-truth clusters, so the local "
        "pass sees objects at the scale it will meet them",
    )
    max_patches_per_img: int = Field(2, ge=0, description="crops per image (training and inference)")
    min_patch_size: int = Field(16, ge=1, description="pixels; smaller cluster crops are dropped")
    lsm: LSMConfig = LSMConfig()
    lsm_visualize: bool = Field(False, description="write lsm/epoch_NNN.png into the run directory")
    score_threshold: float = Field(0.05, ge=0, lt=1, description="inference")
    nms_iou: float = Field(0.5, gt=0, le=1)
    max_detections: int = Field(100, ge=1)
    kd: YOLCDistillConfig | None = Field(None, description="distillation from a teacher detector")

    def reads(self) -> Reads:
        files = {"kd.teacher_ckpt": self.kd.teacher_ckpt} if self.kd is not None else {}
        reruns = self.crop_loss_weight > 0 or self.kd is not None
        return Reads(boxes=True, files=files, classes=self.num_classes, reruns=reruns)
