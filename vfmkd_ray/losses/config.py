"""Config of the distillation loss terms: a named, weighted set of registered terms."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from vfmkd_ray.schema import StrictModel


class FeatureMSEConfig(StrictModel):
    """Masked MSE between the adapted student level and the teacher feature map."""

    type: Literal["feature_mse"] = "feature_mse"
    weight: float = Field(1.0, ge=0)
    student_stride: int = 16
    teacher: str | None = Field(None, description="teacher alias; default: the primary teacher")
    teacher_layer: str | None = Field(None, description="default: the teacher's first stored layer")


class EdgeConfig(StrictModel):
    """BCE between an edge head on a fine student level and the Sobel edges of the input image."""

    type: Literal["edge"] = "edge"
    weight: float = Field(0.5, ge=0)
    student_stride: int = 4


LossTermConfig = Annotated[FeatureMSEConfig | EdgeConfig, Field(discriminator="type")]


def _default_terms() -> dict[str, LossTermConfig]:
    return {"feature_mse": FeatureMSEConfig(), "edge": EdgeConfig()}


class DistillConfig(StrictModel):
    """The loss terms summed with their weights; keys are the names used in metrics."""

    terms: dict[str, LossTermConfig] = Field(default_factory=_default_terms)
    online_ratio: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of samples whose teacher runs in the worker instead of reading the store "
        "(the seed design uses 0.2)",
    )
