"""Config of the optional neck between the student backbone and the heads."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from vfmkd_ray.schema import StrictModel


class YOLOv8PAFPNConfig(StrictModel):
    """MMYOLO's ``YOLOv8PAFPN`` over the backbone's stride 8, 16 and 32 levels; channels come from
    ``feature_info``, depth from the YOLOv8 student's size."""

    type: Literal["yolov8_pafpn"] = "yolov8_pafpn"
    deepen_factor: float | None = Field(
        None, gt=0, description="default: the yolov8_cspdarknet student's size, 0.33 for other students"
    )
    num_csp_blocks: int = Field(3, ge=1, description="before deepen_factor, as in MMYOLO's configs")


class Stride4NeckConfig(StrictModel):
    """YOLC's neck: every backbone level at stride >= 4 projected, upsampled to stride 4 and summed."""

    type: Literal["stride4"] = "stride4"
    channels: int = Field(64, ge=8)


NeckConfig = Annotated[YOLOv8PAFPNConfig | Stride4NeckConfig, Field(discriminator="type")]
