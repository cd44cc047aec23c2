"""The ``heads`` section: named heads of one registered ``type`` each, validated together."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from vfmkd_ray.heads.sam_mask.config import SamMaskHeadConfig
from vfmkd_ray.heads.yolc.config import YOLCHeadConfig
from vfmkd_ray.heads.yolov8.config import YOLOv8HeadConfig

HeadConfig = Annotated[YOLOv8HeadConfig | YOLCHeadConfig | SamMaskHeadConfig, Field(discriminator="type")]
