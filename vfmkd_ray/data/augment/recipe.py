"""The parameters of an augmentation pipeline: ``yolov8`` is MMYOLO's YOLOv8 recipe for a student
size (``yolov8_{n,s,m,l,x}_syncbn_fast_8xb16-500e_coco.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from vfmkd_ray.data.augment.config import mosaic_epoch

PAD_VALUE = 114  # MMYOLO's pad and border value, per channel


@dataclass(frozen=True)
class AugmentSpec:
    mosaic: bool = True
    scaling_range: tuple[float, float] = (0.5, 1.5)  # YOLOv5RandomAffine: 1 -/+ affine_scale
    max_translate: float = 0.1  # of the output size, around its centre
    mosaic_center: tuple[float, float] = (0.5, 1.5)  # of the output size, on the 2x canvas
    mixup_prob: float = 0.0  # YOLOv5MixUp (m: 0.1, l/x: 0.15)
    mixup_beta: float = 32.0  # the mix ratio ~ Beta(32, 32)
    hsv_deltas: tuple[float, float, float] = (0.015, 0.7, 0.4)  # hue, saturation, value
    flip_prob: float = 0.5
    albu_prob: float = 0.01  # each of Blur, MedianBlur, ToGray, CLAHE
    blur_kernels: tuple[int, ...] = (3, 5, 7)  # Albu's blur_limit 7: odd kernels from 3
    close_mosaic_epochs: int = 10  # the last epochs use the letterbox stage (PipelineSwitchHook)
    min_box_size: float = 2.0  # boxes after the affine: both sides larger than this, in pixels
    min_area_ratio: float = 0.1  # their area over the area before it (at its scale) above this
    max_aspect_ratio: float = 100.0  # MMYOLO's YOLOv8 value (YOLOv5RandomAffine's default is 20)

    def mosaic_at(self, epoch: int, epochs: int) -> bool:
        """Whether epoch ``epoch`` (0-based) of ``epochs`` uses mosaic: all but the last
        ``close_mosaic_epochs``."""
        return self.mosaic and mosaic_epoch(epoch, epochs, self.close_mosaic_epochs)


def yolov8_recipe(student_size: str) -> str:
    """The YOLOv8 size whose recipe a student trains with: its own, or s for a student without one
    (timm, OpenMMLab)."""
    return student_size if student_size in ("n", "s", "m", "l", "x") else "s"


def yolov8_spec(size: str, close_mosaic_epochs: int = 10) -> AugmentSpec:
    """MMYOLO's YOLOv8 recipe for student ``size``: affine scale 0.5 and no MixUp for n/s, 0.9 and
    MixUp 0.1 (m) or 0.15 (l, x) for the larger ones."""
    large = size in ("m", "l", "x")
    mixup = {"m": 0.1, "l": 0.15, "x": 0.15}.get(size, 0.0)
    scale = 0.9 if large else 0.5
    return AugmentSpec(
        scaling_range=(1.0 - scale, 1.0 + scale), mixup_prob=mixup, close_mosaic_epochs=close_mosaic_epochs
    )
