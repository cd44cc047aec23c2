"""Config of the ``sam_mask`` head: SAM's prompt encoder and mask decoder on the student."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vfmkd_ray.reads import ReaderConfig, Reads


class SamMaskHeadConfig(ReaderConfig):
    """A promptable mask head (segment-anything's ``PromptEncoder`` + ``MaskDecoder``) fed the
    student's stride-16 level mapped to SAM's 256-channel embedding, prompted with ground-truth
    boxes; focal + dice against the ground-truth masks, plus KD against a SAM teacher's mask logits
    for the same prompts (EdgeSAM's prompt-in-the-loop distillation)."""

    type: Literal["sam_mask"] = "sam_mask"
    weight: float = Field(1.0, ge=0, description="weight of the head's loss in the total")
    features: str | None = Field(
        None,
        description="a distill.terms name (feature_mse on stride 16 against a SAM teacher) whose "
        "adapted output is the head's image embedding; default: the head's own adapter",
    )
    teacher: str | None = Field(
        None,
        description="alias of a SAM teacher: the head starts from its prompt encoder and mask "
        "decoder, and its mask logits for the same prompts are KD targets",
    )
    decoder: Literal["trainable", "frozen"] = Field(
        "trainable", description="whether the prompt encoder and mask decoder train"
    )
    max_masks: int = Field(8, ge=1, description="instance masks (box prompts) sampled per image")
    point_prompts: int = Field(0, ge=0, description="points sampled inside each mask, with its box")
    focal_weight: float = Field(20.0, ge=0, description="SAM's 20:1 focal:dice ratio")
    dice_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0, description="binary KL to the teacher's mask logits")
    kd_temperature: float = Field(1.0, gt=0)

    def reads(self) -> Reads:
        return Reads(
            teachers={"teacher": self.teacher} if self.teacher is not None else {},
            terms={"features": self.features} if self.features is not None else {},
            boxes=True,  # the prompts
            masks=True,
        )

    def settings_without_effect(self) -> list[str]:
        if self.teacher is None and self.model_fields_set & {"kd_weight", "kd_temperature"}:
            return ["kd_weight/kd_temperature have no effect: the head has no teacher"]
        return []
