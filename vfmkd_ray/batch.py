"""``Batch``: one batch as every step, head and loss term sees it, on the training device.

Legend for tensor suffixes: B batch, C channels, H/W input pixels, h/w a feature or mask grid,
N boxes per image (padded), M instance masks per image (padded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vfmkd_ray.data.image_ids import decode_image_ids

# Instance masks travel at a quarter of the input resolution: SAM's mask decoder predicts there.
MASK_STRIDE = 4


@dataclass(frozen=True)
class DataNeeds:
    """The ground truth a head or term needs in every batch (0: none)."""

    max_objects: int = 0  # boxes + labels per image, padded
    max_masks: int = 0  # instance masks per image (each with its box), padded

    def merge(self, other: DataNeeds) -> DataNeeds:
        return DataNeeds(max(self.max_objects, other.max_objects), max(self.max_masks, other.max_masks))


@dataclass
class Batch:
    """Images, teacher targets and the ground truth the heads need.

    Attributes:
        images_BCHW: ImageNet-normalised float images (letterboxed squares).
        valid_hw_B2: unpadded height and width of each image, in input pixels.
        teacher_features: ``<alias>/<layer>`` (``data.feature_keys.feature_key``) -> float
            ``B x C x h x w`` target, stored or computed live.
        num_online: samples whose teacher features were computed live in the worker.
        boxes_BN4: ground-truth boxes ``x1, y1, x2, y2`` in input pixels; rows whose label is -1
            are padding. None when no head needs boxes.
        labels_BN: 0-based class index per box, -1 for padding.
        masks_BMhw: 0/1 instance masks at ``MASK_STRIDE``, uint8.
        mask_box_BM: the row of ``boxes_BN4`` each mask belongs to (its prompt box), -1 for padding.
        image_ids_BL: the dataset ids of the images as ``data.image_ids`` bytes, for messages.
        sample_keys_B: ``data.pipeline.sample_key`` of each image (host memory): an epoch's data
            position lists the keys it trained on.
        stored_bytes: the stored feature bytes the batch's rows cost to read.
        teacher_coverage: for targets warped into an augmented canvas (``under_augmentation:
            warp``), ``<alias>/<layer>`` -> ``B x 1 x h x w`` float, 1 where a stored map covers
            the cell; absent: the target covers its whole grid.
        teacher_stats: ``<alias>/<layer>`` -> ``2 x C``: the per-channel mean and std of the
            teacher's store (``store.channel_stats``), for terms that standardise their target.
        teacher_phi_s: ``<alias>/<layer>`` -> ``(1 + C) x C``: the mean, then the PHI-S matrix of
            the teacher's store (``store.phi_s``), for ``normalize: phi_s`` terms.
    """

    images_BCHW: torch.Tensor
    valid_hw_B2: torch.Tensor
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)
    num_online: int = 0
    boxes_BN4: torch.Tensor | None = None
    labels_BN: torch.Tensor | None = None
    masks_BMhw: torch.Tensor | None = None
    mask_box_BM: torch.Tensor | None = None
    image_ids_BL: torch.Tensor | None = None
    sample_keys_B: torch.Tensor | None = None
    stored_bytes: int = 0
    teacher_coverage: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_phi_s: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.images_BCHW.shape[-1])

    def target_mask(self, teacher_key: str, grid: tuple[int, int]) -> torch.Tensor:
        """``B x 1 x h x w``: 1 where teacher target ``teacher_key`` on ``grid`` is the teacher's
        view of the student's pixels (inside the unpadded image, and covered by a stored map)."""
        from vfmkd_ray.data.image_tensors import valid_mask

        mask_B1hw = valid_mask(self.valid_hw_B2, self.image_size, grid)
        coverage = self.teacher_coverage.get(teacher_key)
        return mask_B1hw if coverage is None else mask_B1hw * coverage

    def standardized_target(self, teacher_key: str) -> torch.Tensor:
        """Teacher target ``teacher_key`` with each channel standardised by its store's statistics."""
        stats = self.teacher_stats.get(teacher_key)
        if stats is None:
            raise ValueError(
                f"no channel statistics for teacher target {teacher_key}: normalize channel needs the "
                "teacher's store made by a precompute that keeps them"
            )
        # A channel (nearly) constant over the store would blow up a live target's small deviations:
        # its std is floored at a thousandth of the channels' mean std.
        mean_C, std_C = stats[0], stats[1].clamp_min(float(stats[1].mean()) * 1e-3 + 1e-12)
        target_BCHW = self.teacher_features[teacher_key]
        return (target_BCHW - mean_C[:, None, None].to(target_BCHW)) / std_C[:, None, None].to(target_BCHW)

    def phi_s_target(self, teacher_key: str) -> torch.Tensor:
        """Teacher target ``teacher_key`` through its store's PHI-S transform, cell by cell."""
        packed = self.teacher_phi_s.get(teacher_key)
        if packed is None:
            raise ValueError(
                f"no PHI-S transform for teacher target {teacher_key}: normalize phi_s needs the "
                "teacher's store made by a precompute that keeps it"
            )
        target_BCHW = self.teacher_features[teacher_key]
        mean_C, matrix_OC = packed[0].to(target_BCHW), packed[1:].to(target_BCHW)
        return torch.einsum("oc,bchw->bohw", matrix_OC, target_BCHW - mean_C[:, None, None])

    def image_ids(self) -> tuple[str, ...]:
        """The images' ids (empty when the batch does not carry them); copies to the host."""
        return () if self.image_ids_BL is None else decode_image_ids(self.image_ids_BL)

    def __len__(self) -> int:
        return int(self.images_BCHW.shape[0])

    def boxes(self) -> list[torch.Tensor]:
        """Per image the ``K x 4`` real (unpadded) boxes."""
        if self.boxes_BN4 is None or self.labels_BN is None:
            raise ValueError("this batch carries no ground-truth boxes (no head asked for them)")
        return [boxes[labels >= 0] for boxes, labels in zip(self.boxes_BN4, self.labels_BN, strict=True)]
