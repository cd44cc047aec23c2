"""``YOLCHead``: YOLC-style tiny-object detection (Liu et al., "YOLC: You Only Look Clusters for
Tiny Object Detection in Aerial Images", 2024) behind the ``TaskHead`` interface.

Loss: Gaussian focal + NWD + L1 on the whole image, the same loss on zoomed ground-truth cluster
crops (``crop_supervision``) and, with ``kd``, the global heatmap/coarse and local refine KD terms
against a frozen teacher run's yolc head. Inference: whole image, or whole image plus the crops of
the student's own heatmap (``eval_modes``).
"""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.batch import Batch
from vfmkd_ray.heads.base import DataNeeds, Detections, HeadContext, Rerun, TaskHead
from vfmkd_ray.heads.yolc.config import YOLCHeadConfig
from vfmkd_ray.heads.yolc.crop_supervision import crop_supervision
from vfmkd_ray.heads.yolc.inference import detect
from vfmkd_ray.heads.yolc.kd import detection_kd
from vfmkd_ray.heads.yolc.losses import detection_loss
from vfmkd_ray.heads.yolc.lsm import find_clusters
from vfmkd_ray.heads.yolc.lsm_visual import lsm_overlay_png
from vfmkd_ray.heads.yolc.module import STRIDE, DetectorOutput, YOLCHeadModule
from vfmkd_ray.heads.yolc.targets import build_targets

MODES = {"whole": False, "crop_refine": True}


class YOLCHead(TaskHead):
    kind = "boxes"

    def __init__(self, name: str, cfg: YOLCHeadConfig, context: HeadContext) -> None:
        super().__init__(name, cfg, context)
        neck = context.neck_info
        if neck is None or STRIDE not in neck.reduction():
            strides = neck.reduction() if neck is not None else "none (no neck)"
            raise ValueError(
                f"the yolc head reads a stride-4 neck level, the neck has strides {strides}: "
                "configure neck: {type: stride4}"
            )
        self.level = neck.index_of_stride(STRIDE)
        self.in_channels = neck.channels()[self.level]
        self.teacher: nn.Module | None = None  # the frozen teacher run, loaded by to()

    def needs(self) -> DataNeeds:
        return DataNeeds(max_objects=self.cfg.max_objects)

    def build_module(self) -> nn.Module:
        return YOLCHeadModule(self.in_channels, self.cfg.head_channels, self.cfg.num_classes, self.level)

    def check(self) -> None:
        self._load_teacher()

    def to(self, device: torch.device) -> YOLCHead:
        self._load_teacher()
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    def _load_teacher(self) -> None:
        if self.cfg.kd is not None and self.teacher is None:
            load = self.context.load_run_model
            assert load is not None, "a yolc head with kd is built with a run-model loader"
            self.teacher = load(self.cfg.kd.teacher_ckpt)
            teacher_head = self.cfg.kd.teacher_head or self.name
            if teacher_head not in self.teacher.heads or not isinstance(
                self.teacher.heads[teacher_head], YOLCHeadModule
            ):
                raise ValueError(
                    f"heads.{self.name}.kd.teacher_ckpt {self.cfg.kd.teacher_ckpt} has no yolc head "
                    f"{teacher_head!r}; its heads: {list(self.teacher.heads)}"
                )
            self.teacher_head = teacher_head

    def loss(self, module: nn.Module, output: DetectorOutput, batch: Batch, rerun: Rerun) -> dict:
        cfg = self.cfg
        images, boxes, labels = batch.images_BCHW, batch.boxes_BN4, batch.labels_BN
        grid = tuple(output.heatmap_BKHW.shape[-2:])
        targets = build_targets(boxes, labels, cfg.num_classes, grid, STRIDE)
        result = detection_loss(output, targets, cfg, STRIDE)
        if cfg.crop_loss_weight > 0:
            crops = crop_supervision(rerun, images, boxes, labels, targets, cfg)
            if crops is not None:
                result["loss"] = result["loss"] + cfg.crop_loss_weight * crops
            # Every batch reports the same keys, crops or none (workers average them key by key).
            result["loss/crops"] = crops.detach() if crops is not None else result["loss"].new_zeros(())
        if self.teacher is not None:
            with torch.no_grad():
                teacher_out = self.teacher.head_output(self.teacher_head, images)
            kd = detection_kd(rerun, self._teacher_rerun, images, output, teacher_out, cfg.kd, cfg)
            result["loss"] = result["loss"] + kd.pop("kd")
            result |= kd
        return {key.removeprefix("loss/") if key != "loss" else key: value for key, value in result.items()}

    @torch.no_grad()
    def _teacher_rerun(self, images_BCHW: torch.Tensor) -> DetectorOutput:
        return self.teacher.head_output(self.teacher_head, images_BCHW)

    def eval_modes(self) -> tuple[str, ...]:
        return tuple(MODES)

    @torch.no_grad()
    def predict(
        self, module: nn.Module, output: DetectorOutput, batch: Batch, rerun: Rerun, mode: str = "whole"
    ) -> list[Detections]:
        if mode not in MODES:
            raise ValueError(f"yolc inference mode {mode!r} unknown; modes: {list(MODES)}")
        return detect(output, batch.images_BCHW, rerun, self.cfg, MODES[mode])

    def pictures(self, module: nn.Module, batch: Batch, rerun: Rerun) -> dict[str, bytes]:
        if not self.cfg.lsm_visualize:
            return {}
        with torch.no_grad():
            out = rerun(batch.images_BCHW[:1])
        probs = torch.sigmoid(out.heatmap_BKHW[0].float())
        cfg = self.cfg
        crops = find_clusters(
            probs,
            tuple(batch.images_BCHW.shape[-2:]),
            STRIDE,
            cfg.lsm,
            cfg.max_patches_per_img,
            cfg.min_patch_size,
        )
        return {"lsm.png": lsm_overlay_png(_pixels(batch.images_BCHW[0]), crops)}


def _pixels(image_CHW: torch.Tensor):
    """Normalised image back to uint8 pixels, for pictures."""
    from vfmkd_ray.data.images import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=image_CHW.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image_CHW.device).view(3, 1, 1)
    return ((image_CHW.float() * std + mean) * 255).clamp(0, 255).byte().cpu().numpy()
