"""The ``yolov8`` task head: MMYOLO 0.6.0's YOLOv8 detection head on the ``yolov8_pafpn`` neck.

``YOLOv8Head`` (a ``TaskHead``) builds a module holding MMYOLO's ``YOLOv8HeadModule`` as
``head_module``, so the model's ``heads.<name>.head_module.*`` keys map one to one onto MMYOLO's
``bbox_head.head_module.*``. Its loss is ``loss.yolov8_loss`` (``YOLOv8Head.loss_by_feat``, without
the ``num_imgs * world_size`` factor: see that module). Predictions follow MMYOLO's
``YOLOv5Head.predict_by_feat`` with ``multi_label=True`` (``mmyolo/models/dense_heads/yolov5_head.py``):
sigmoid scores, every (prior, class) pair above ``score_threshold``, the best ``nms_pre`` of them,
class-wise NMS, the best ``max_detections``, boxes clipped to the unpadded image. Boxes stay in
input (letterbox) pixels; MMYOLO's rescale to the original image is ``vfmkd eval``'s job.
"""

from __future__ import annotations

import torch
from torch import nn

from vfmkd_ray.batch import Batch
from vfmkd_ray.heads.base import DataNeeds, Detections, Features, HeadContext, Rerun, TaskHead
from vfmkd_ray.heads.yolov8.box_ops import distance_to_box, grid_priors
from vfmkd_ray.heads.yolov8.config import YOLOv8HeadConfig
from vfmkd_ray.heads.yolov8.head_module import HeadOutput, YOLOv8HeadModule
from vfmkd_ray.heads.yolov8.loss import yolov8_loss

HEAD_STRIDES = [8, 16, 32]


class YOLOv8DetectionModule(nn.Module):
    """What goes into ``MultiTaskModel.heads[name]``: the head module on the neck's levels."""

    def __init__(self, head_module: YOLOv8HeadModule) -> None:
        super().__init__()
        self.head_module = head_module

    def forward(self, features: Features) -> HeadOutput:
        if features.neck is None:
            raise ValueError("the yolov8 head reads the neck's levels; the model has no neck")
        return self.head_module(features.neck)


class YOLOv8Head(TaskHead):
    """YOLOv8 boxes: task-aligned assignment, BCE + CIoU + DFL, NMS at inference."""

    kind = "boxes"

    def __init__(self, name: str, cfg: YOLOv8HeadConfig, context: HeadContext) -> None:
        super().__init__(name, cfg, context)
        info = context.neck_info
        if info is None or info.reduction() != HEAD_STRIDES:
            found = "no neck" if info is None else f"a neck with strides {info.reduction()}"
            raise ValueError(
                f"the yolov8 head needs neck levels with strides {HEAD_STRIDES} "
                f"(neck: {{type: yolov8_pafpn}}); the model has {found}"
            )
        self.strides = info.reduction()
        self.in_channels = info.channels()

    def needs(self) -> DataNeeds:
        return DataNeeds(max_objects=self.cfg.max_objects)

    def build_module(self) -> nn.Module:
        return YOLOv8DetectionModule(
            YOLOv8HeadModule(self.in_channels, self.strides, self.cfg.num_classes, self.cfg.reg_max)
        )

    def loss(
        self, module: nn.Module, output: HeadOutput, batch: Batch, rerun: Rerun
    ) -> dict[str, torch.Tensor]:
        """``{"loss", "cls", "bbox", "dfl", "num_pos"}``; ``loss`` is the config-weighted sum of the
        three parts (``self.weight`` is applied by the training step)."""
        if batch.boxes_BN4 is None or batch.labels_BN is None:
            raise ValueError("the yolov8 head needs ground-truth boxes in the batch")
        return yolov8_loss(output, batch.boxes_BN4, batch.labels_BN, self.strides, self.cfg)

    @torch.no_grad()
    def predict(
        self, module: nn.Module, output: HeadOutput, batch: Batch, rerun: Rerun, mode: str = "default"
    ) -> list[Detections]:
        """Per image the detections, best first (boxes in input pixels)."""
        device = output.cls_logits[0].device
        with torch.autocast(device_type=device.type, enabled=False):
            scores_BPK = torch.cat([c.permute(0, 2, 3, 1).flatten(1, 2) for c in output.cls_logits], 1)
            dists_BP4 = torch.cat([d.permute(0, 2, 3, 1).flatten(1, 2) for d in output.bbox_dists], 1)
            priors_P3 = grid_priors([tuple(c.shape[-2:]) for c in output.cls_logits], self.strides, device)
            boxes_BP4 = distance_to_box(priors_P3[:, :2], dists_BP4.float() * priors_P3[:, 2:])
            scores_BPK = scores_BPK.float().sigmoid()
            valid_hw_B2 = batch.valid_hw_B2.to(device)
            return [
                self._postprocess(boxes_P4, scores_PK, hw_2)
                for boxes_P4, scores_PK, hw_2 in zip(boxes_BP4, scores_BPK, valid_hw_B2, strict=True)
            ]

    def _postprocess(self, boxes_P4: torch.Tensor, scores_PK: torch.Tensor, hw_2: torch.Tensor) -> Detections:
        """One image: MMYOLO's ``filter_scores_and_topk`` (multi-label), NMS, top-k and clip."""
        cfg = self.cfg
        scores_flat = scores_PK.flatten()
        keep = (scores_flat > cfg.score_threshold).nonzero().squeeze(1)
        if not len(keep):
            return Detections.empty(boxes_P4.device)
        scores, order = scores_flat[keep].sort(descending=True)
        keep = keep[order[: cfg.nms_pre]]
        scores = scores[: cfg.nms_pre]
        num_classes = scores_PK.shape[1]
        prior_idx, labels = keep // num_classes, keep % num_classes
        boxes = boxes_P4[prior_idx]
        # Imported where it runs: torchvision.ops imports torch._dynamo (2 s per process here).
        from torchvision.ops import batched_nms

        kept = batched_nms(boxes, scores, labels, cfg.nms_iou)[: cfg.max_detections]
        boxes = boxes[kept]
        # MMYOLO clips to the original image after rescaling; in letterbox pixels that is the
        # unpadded top-left region.
        height, width = hw_2.to(boxes.dtype).unbind()
        boxes = torch.stack(
            [
                boxes[:, 0].clamp(0, width),
                boxes[:, 1].clamp(0, height),
                boxes[:, 2].clamp(0, width),
                boxes[:, 3].clamp(0, height),
            ],
            dim=1,
        )
        return Detections(boxes, scores[kept], labels[kept].long())
