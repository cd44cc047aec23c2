"""Cropping and zooming in memory: image regions -> a batch of patches with their ``CropMeta``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmkd_ray.heads.yolc.boxes import CropMeta
from vfmkd_ray.heads.yolc.lsm import Crop


def crop_and_zoom(
    images_BCHW: torch.Tensor, crops: list[list[Crop]], zoom: float, patch_size: int
) -> tuple[torch.Tensor, list[CropMeta]]:
    """Each crop (pixel rectangle of image ``b``) resized by ``zoom`` (less if it would not fit)
    onto a zero ``patch_size`` canvas. Returns ``N x C x P x P`` patches and their metadata."""
    patches, metas = [], []
    for index, image_crops in enumerate(crops):
        for x1, y1, x2, y2 in image_crops:
            left, top = int(x1), int(y1)
            right, bottom = max(left + 1, round(x2)), max(top + 1, round(y2))
            region = images_BCHW[index : index + 1, :, top:bottom, left:right]
            height, width = region.shape[-2:]
            scale = min(zoom, patch_size / max(height, width))
            new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
            resized = F.interpolate(region, size=(new_h, new_w), mode="bilinear", align_corners=False)
            canvas = images_BCHW.new_zeros(1, images_BCHW.shape[1], patch_size, patch_size)
            canvas[..., :new_h, :new_w] = resized
            patches.append(canvas)
            metas.append(
                CropMeta(index, float(left), float(top), new_w / width, new_h / height, new_w, new_h)
            )
    if not patches:
        return images_BCHW.new_zeros(0, images_BCHW.shape[1], patch_size, patch_size), []
    return torch.cat(patches), metas
