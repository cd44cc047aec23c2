"""Config of the YOLC-style detector (``detection`` section) and of its distillation (the detection
fields of the ``distill`` section live in ``losses/config.py``)."""

from __future__ import annotations

from pydantic import Field

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


class DetectionConfig(StrictModel):
    """The detector over the student backbone, its supervised losses and its inference."""

    num_classes: int = Field(3, ge=1)
    input_size: int = Field(256, ge=32, description="letterbox size of training and evaluation")
    neck_channels: int = Field(64, ge=8)
    head_channels: int = Field(64, ge=8)
    max_objects: int = Field(128, ge=1, description="boxes kept per image (padding for batching)")
    hm_weight: float = Field(1.0, ge=0)
    box_weight: float = Field(1.0, ge=0, description="Wasserstein (NWD) loss on coarse and refined boxes")
    l1_weight: float = Field(0.1, ge=0, description="L1 on the encoded coarse and refined boxes")
    nwd_constant: float = Field(12.8, gt=0, description="NWD normalising constant, in pixels")
    patch_size: int = Field(128, ge=16, description="canvas of a zoomed crop in the local pass")
    crop_loss_weight: float = Field(
        1.0,
        ge=0,
        description="supervised loss on zoomed crops of the ground-truth clusters, so the "
        "local pass sees objects at the scale it will meet them",
    )
    score_threshold: float = Field(0.05, ge=0, lt=1)
    nms_iou: float = Field(0.5, gt=0, le=1)
    max_detections: int = Field(100, ge=1)
    lsm: LSMConfig = LSMConfig()
