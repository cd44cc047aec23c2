"""The ``sam_mask`` head: SAM's prompt encoder and mask decoder on the student, prompted with the
ground-truth boxes of the batch's instance masks, distilled from a SAM teacher's mask logits for
the same prompts.

Follows EdgeSAM (Zhou et al., "EdgeSAM: Prompt-In-the-Loop Distillation for On-Device Deployment of
SAM", 2023): the student's image embedding feeds a copy of the teacher's decoder, and both decoders
get the same box (and point) prompts, so the student learns the teacher's prompt-conditioned masks,
not only its features. The ground-truth losses are SAM's (Kirillov et al. 2023, appendix A): focal
and dice on the single-mask output, plus an MSE that trains the IoU head to predict the mask's IoU
with the ground truth (factor 1, as SAM). EdgeSAM's later rounds, which add points where student and
teacher disagree, are not done: points are sampled once, inside the ground-truth mask.

Legend: B images, K prompts (one per mask) over the whole batch, P points per prompt, C the 256
embedding channels, h/w a grid (embedding or mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vfmkd_ray.batch import MASK_STRIDE, Batch
from vfmkd_ray.data.feature_keys import feature_key
from vfmkd_ray.data.image_tensors import valid_mask
from vfmkd_ray.heads.base import DataNeeds, Features, HeadContext, MaskPredictions, Rerun, TaskHead
from vfmkd_ray.heads.sam_mask.config import SamMaskHeadConfig
from vfmkd_ray.heads.sam_mask.losses import binary_kl, dice_loss, mask_iou, sigmoid_focal_loss
from vfmkd_ray.losses.feature_mse import FeatureMSE
from vfmkd_ray.models.adapters import FeatureAdapter
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.models.teachers.sam import SAM_OUT_CHANNELS, SAM_PATCH, SAM_SPECS, SamTeacher
from vfmkd_ray.models.teachers.sam_decoder import SamPromptDecoder, build_sam_prompt_decoder

IOU_WEIGHT = 1.0  # SAM's constant factor on the IoU-head MSE
MAX_PROMPT_BOXES = 100  # boxes per image the data path keeps; masks reference their rows
# Points are drawn from a CPU generator seeded with POINT_SEED + the batch's number of foreground
# mask cells: a batch gets the same points whichever rank runs it and after a resume, and the
# global RNG is untouched.
POINT_SEED = 0


class SamMaskModule(nn.Module):
    """The head's part of the model: the student's image embedding and its decoder.

    ``forward`` returns the ``B x 256 x h x w`` embedding (a distill term's adapted output, or this
    module's own adapter on the stride-16 level); decoding needs the batch's prompts, so the head's
    ``loss`` and ``predict`` run ``decoder`` on it.
    """

    def __init__(
        self, decoder: SamPromptDecoder, adapter: FeatureAdapter | None, level: int, term: str | None
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.adapter = adapter
        self.level = level
        self.term = term

    def forward(self, features: Features) -> torch.Tensor:
        if self.term is not None:
            return features.adapted[self.term]
        return self.adapter(features.backbone[self.level])


@dataclass(frozen=True)
class Prompts:
    """The prompts of one batch, flat over its images: a box per mask, points inside it, the mask."""

    image_K: torch.Tensor  # the image each prompt is on
    box_index_K: torch.Tensor  # its row in boxes_BN4
    boxes_K4: torch.Tensor  # x1 y1 x2 y2, input pixels
    points_KP2: torch.Tensor | None  # x y, input pixels
    targets_Khw: torch.Tensor | None  # 0/1 float masks on the batch's mask grid


class SamMaskHead(TaskHead):
    """A promptable mask head; see the module docstring.

    Raises (at construction):
        ValueError: ``features`` is not a 256-channel ``feature_mse`` term, or ``teacher`` is not
            the alias of a SAM teacher.
    """

    kind = "masks"
    cfg: SamMaskHeadConfig

    def __init__(self, name: str, cfg: SamMaskHeadConfig, context: HeadContext) -> None:
        super().__init__(name, cfg, context)
        self._embed_hw = self._embedding_grid()
        self._teacher_cfg = self._sam_teacher()
        # Built on first use (``_teacher``): rebuilding a trained model to export it, or to use it
        # as a teacher, never reads the SAM checkpoint.
        self._teacher_decoder: SamPromptDecoder | None = None
        self._device = torch.device("cpu")
        if self._teacher_cfg is not None:
            self.teacher_layers = (feature_key(cfg.teacher, SamTeacher.layer_names[0]),)

    def _embedding_grid(self) -> tuple[int, int]:
        if self.cfg.features is None:
            side = self.context.input_size // SAM_PATCH
            return (side, side)
        name, terms = self.cfg.features, self.context.terms
        if name not in terms:
            raise ValueError(f"features {name!r} is not a distill.terms name; terms: {sorted(terms)}")
        term = terms[name]
        if not isinstance(term, FeatureMSE) or term.teacher_shape[0] != SAM_OUT_CHANNELS:
            shape = getattr(term, "teacher_shape", None)
            raise ValueError(
                f"features {name!r} must be a feature_mse term onto a {SAM_OUT_CHANNELS}-channel SAM "
                f"embedding, got {type(term).__name__} with teacher_shape {shape}"
            )
        return tuple(term.teacher_shape[1:])

    def _sam_teacher(self) -> TeacherConfig | None:
        alias = self.cfg.teacher
        if alias is None:
            return None
        if alias not in self.context.teachers:
            raise ValueError(
                f"teacher {alias!r} is not a teachers alias; aliases: {sorted(self.context.teachers)}"
            )
        teacher = self.context.teachers[alias]
        if teacher.name not in SAM_SPECS:
            raise ValueError(
                f"teacher {alias!r} is {teacher.name}, which has no SAM mask decoder; "
                f"SAM teachers: {sorted(SAM_SPECS)}"
            )
        return teacher

    def needs(self) -> DataNeeds:
        return DataNeeds(max_objects=MAX_PROMPT_BOXES, max_masks=self.cfg.max_masks)

    def build_module(self) -> SamMaskModule:
        input_size = self.context.input_size
        # A fresh model starts from the teacher's decoder, so step 0's KD loss measures the embedding
        # only; a model about to load a checkpoint, or built on the meta device (a driver's config
        # check), needs the structure alone.
        if self._teacher_cfg is not None and self.context.fresh and not _on_meta_device():
            decoder = self._teacher().with_geometry(self._embed_hw, input_size).requires_grad_(True)
        else:
            decoder = SamPromptDecoder(self._embed_hw, input_size)
        if self.cfg.decoder == "frozen":
            decoder.requires_grad_(False)
        else:
            # Never reached by single-mask box prompting: frozen, so DDP waits for no gradient.
            unused = set(decoder.unused_parameter_names(with_points=self.cfg.point_prompts > 0))
            for param_name, param in decoder.named_parameters():
                param.requires_grad_(param_name not in unused)
        if self.cfg.features is not None:
            return SamMaskModule(decoder, None, -1, self.cfg.features)
        level = self.context.backbone_info.index_of_stride(SAM_PATCH)
        in_channels = self.context.backbone_info.channels()[level]
        return SamMaskModule(
            decoder, FeatureAdapter(in_channels, SAM_OUT_CHANNELS, self._embed_hw), level, None
        )

    def to(self, device: torch.device) -> SamMaskHead:
        self._device = device
        if self._teacher_decoder is not None:
            self._teacher_decoder.to(device)
        return self

    def _teacher(self) -> SamPromptDecoder:
        if self._teacher_decoder is None:
            decoder = build_sam_prompt_decoder(self._teacher_cfg).requires_grad_(False).eval()
            self._teacher_decoder = decoder.to(self._device)
        return self._teacher_decoder

    def loss(
        self, module: SamMaskModule, output: torch.Tensor, batch: Batch, rerun: Rerun
    ) -> dict[str, torch.Tensor]:
        prompts = batch_prompts(batch, self.cfg.point_prompts)
        if not len(prompts.image_K):
            return self._empty_loss(module, output)
        grid_hw = tuple(batch.masks_BMhw.shape[-2:])
        valid_Khw = valid_mask(batch.valid_hw_B2, batch.image_size, grid_hw)[prompts.image_K, 0]
        logits_Khw, iou_pred_K = decode(module.decoder, output[prompts.image_K], prompts, batch, grid_hw)
        logits_Khw, targets_Khw = logits_Khw.float(), prompts.targets_Khw
        focal = sigmoid_focal_loss(logits_Khw, targets_Khw, valid_Khw)
        dice = dice_loss(logits_Khw, targets_Khw, valid_Khw)
        iou_K = mask_iou(logits_Khw, targets_Khw, valid_Khw)
        total = self.cfg.focal_weight * focal + self.cfg.dice_weight * dice
        out = {"focal": focal.detach(), "dice": dice.detach()}
        if self.cfg.decoder == "trainable":
            iou_mse = F.mse_loss(iou_pred_K.float(), iou_K)
            total = total + IOU_WEIGHT * iou_mse
            out["iou_mse"] = iou_mse.detach()
        if self._teacher_cfg is not None:
            teacher_Khw = self._teacher_logits(prompts, batch, grid_hw)
            kd = binary_kl(logits_Khw, teacher_Khw, valid_Khw, self.cfg.kd_temperature)
            total = total + self.cfg.kd_weight * kd
            out["kd"] = kd.detach()
        out["iou"] = iou_K.mean()
        out["num_masks"] = torch.tensor(float(len(iou_K)), device=logits_Khw.device)
        return {"loss": total, **out}

    @torch.no_grad()
    def _teacher_logits(self, prompts: Prompts, batch: Batch, grid_hw: tuple[int, int]) -> torch.Tensor:
        """The frozen teacher decoder's logits for the same prompts, on the teacher's embedding."""
        teacher = self._teacher().to(batch.images_BCHW.device)
        dtype = next(teacher.parameters()).dtype
        embed_KChw = batch.teacher_features[self.teacher_layers[0]][prompts.image_K].to(dtype)
        return decode(teacher, embed_KChw, prompts, batch, grid_hw)[0].float()

    def _empty_loss(self, module: SamMaskModule, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """An exact zero with a (zero) gradient on the embedding and every trainable parameter."""
        zero = output.sum() * 0.0
        for param in module.parameters():
            if param.requires_grad:
                zero = zero + param.sum() * 0.0
        out = {"loss": zero, "focal": zero.detach(), "dice": zero.detach()}
        if self.cfg.decoder == "trainable":
            out["iou_mse"] = zero.detach()
        if self._teacher_cfg is not None:
            out["kd"] = zero.detach()
        return out | {"iou": zero.detach(), "num_masks": zero.detach()}

    @torch.no_grad()
    def predict(
        self, module: SamMaskModule, output: torch.Tensor, batch: Batch, rerun: Rerun, mode: str = "default"
    ) -> list[MaskPredictions]:
        """Per image, one box-prompted mask per instance mask of the batch (per real box when the
        batch carries no masks), at ``MASK_STRIDE``; the predicted IoU is the score."""
        side = batch.image_size // MASK_STRIDE
        prompts = batch_prompts(batch, num_points=0, with_targets=False)
        if not len(prompts.image_K):
            empty = MaskPredictions(
                output.new_zeros(0, side, side), output.new_zeros(0), prompts.box_index_K.new_zeros(0)
            )
            return [empty for _ in range(len(batch))]
        logits_Khw, iou_K = decode(module.decoder, output[prompts.image_K], prompts, batch, (side, side))
        predictions = []
        for image in range(len(batch)):
            mine_K = prompts.image_K == image
            predictions.append(
                MaskPredictions(
                    logits_Khw[mine_K].float(), iou_K[mine_K].float(), prompts.box_index_K[mine_K]
                )
            )
        return predictions


def _on_meta_device() -> bool:
    return torch.empty(0).device.type == "meta"


def batch_prompts(batch: Batch, num_points: int, with_targets: bool = True) -> Prompts:
    """A box prompt per instance mask of the batch (per real box when the batch carries no masks
    and ``with_targets`` is off), with ``num_points`` points inside each mask."""
    if batch.boxes_BN4 is None or batch.labels_BN is None:
        raise ValueError("the sam_mask head needs ground-truth boxes in the batch (they are its prompts)")
    has_masks = batch.masks_BMhw is not None and batch.mask_box_BM is not None
    if (with_targets or num_points) and not has_masks:
        raise ValueError("the sam_mask head needs instance masks in the batch (DataNeeds.max_masks)")
    if has_masks:
        image_K, slot_K = torch.nonzero(batch.mask_box_BM >= 0, as_tuple=True)
        box_index_K = batch.mask_box_BM[image_K, slot_K]
        masks_Khw = batch.masks_BMhw[image_K, slot_K].float()
    else:
        image_K, box_index_K = torch.nonzero(batch.labels_BN >= 0, as_tuple=True)
    boxes_K4 = batch.boxes_BN4[image_K, box_index_K].float()
    points_KP2 = None
    if num_points:
        generator = torch.Generator().manual_seed(POINT_SEED + int(batch.masks_BMhw.sum()))
        points_KP2 = sample_points(masks_Khw, boxes_K4, num_points, batch.image_size, generator)
    return Prompts(image_K, box_index_K, boxes_K4, points_KP2, masks_Khw if with_targets else None)


def sample_points(
    masks_Khw: torch.Tensor,
    boxes_K4: torch.Tensor,
    num_points: int,
    image_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``num_points`` positive points per mask, uniform over its foreground cells (with
    replacement), at the cell centres in input pixels; an empty mask gets its box centre."""
    num_masks, height, width = masks_Khw.shape
    cumulative_KL = masks_Khw.flatten(1).cumsum(1)
    count_K1 = cumulative_KL[:, -1:]
    uniform_KP = torch.rand(num_masks, num_points, generator=generator).to(masks_Khw.device)
    # The first cell whose running count exceeds u * count is a foreground cell, each equally likely.
    index_KP = torch.searchsorted(cumulative_KL, uniform_KP * count_K1, right=True).clamp_max(
        height * width - 1
    )
    cells_KP2 = torch.stack([index_KP % width, index_KP // width], dim=-1).float()
    stride = image_size / width
    points_KP2 = (cells_KP2 + 0.5) * stride - 0.5  # pixel-index coordinates, as SAM's points
    centres_KP2 = ((boxes_K4[:, :2] + boxes_K4[:, 2:]) / 2).unsqueeze(1).expand_as(points_KP2)
    return torch.where(count_K1.unsqueeze(-1) > 0, points_KP2, centres_KP2)


def decode(
    decoder: SamPromptDecoder,
    embed_KChw: torch.Tensor,
    prompts: Prompts,
    batch: Batch,
    grid_hw: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``decoder``'s ``K x h x w`` logits on ``grid_hw`` and ``K`` IoUs for the prompts, which are
    given in the batch's input pixels and rescaled to the decoder's input size (as SAM's
    ``ResizeLongestSide``: coordinates times the size ratio)."""
    scale = decoder.input_size / batch.image_size
    points_KP2 = None if prompts.points_KP2 is None else prompts.points_KP2 * scale
    logits_Khw, iou_K = decoder.decode(embed_KChw, prompts.boxes_K4 * scale, points_KP2)
    if tuple(logits_Khw.shape[-2:]) != tuple(grid_hw):
        logits_Khw = F.interpolate(
            logits_Khw.unsqueeze(1), size=grid_hw, mode="bilinear", align_corners=False
        ).squeeze(1)
    return logits_Khw, iou_K
