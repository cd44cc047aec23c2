"""Config of the distillation loss terms: a named, weighted set of registered terms."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

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


class FGDConfig(StrictModel):
    """Focal and global distillation (Yang et al., CVPR 2022) of a detection student's features,
    with ground-truth boxes as the foreground mask."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    type: Literal["fgd"] = "fgd"
    weight: float = Field(1.0, ge=0)
    student_stride: int = 4
    teacher: str | None = Field(None, description="teacher alias; default: the primary teacher")
    teacher_layer: str | None = Field(None, description="default: the teacher's first layer")
    temperature: float = Field(0.5, gt=0)
    alpha: float = Field(1e-3, ge=0, description="foreground feature loss")
    beta: float = Field(5e-4, ge=0, description="background feature loss")
    gamma: float = Field(1e-3, ge=0, description="attention loss")
    lambda_: float = Field(5e-6, ge=0, alias="lambda", description="global (relation) loss")


LossTermConfig = Annotated[FeatureMSEConfig | EdgeConfig | FGDConfig, Field(discriminator="type")]


def _default_terms() -> dict[str, LossTermConfig]:
    return {"feature_mse": FeatureMSEConfig(), "edge": EdgeConfig()}


class DetectionDistillConfig(StrictModel):
    """YOLC detection distillation (``task: detection``): a frozen teacher detector's global heatmap
    and coarse boxes, and its refined boxes on dense-cluster crops."""

    enable: bool = False
    teacher_ckpt: str | None = Field(None, description="best_detector.pth of a trained teacher detector")
    kd_weight_global_hm: float = Field(1.0, ge=0)
    kd_weight_global_coarse: float = Field(0.1, ge=0)
    kd_weight_local_refine: float = Field(0.1, ge=0)
    use_teacher_crop: bool = True
    max_patches_per_img: int = Field(2, ge=0)
    min_patch_size: int = Field(16, ge=1, description="pixels; smaller cluster crops are dropped")
    lsm_visualize: bool = Field(False, description="write LSM crop PNGs to the run directory")
    hm_kd: Literal["mse", "kl"] = "mse"
    temperature: float = Field(1.0, gt=0)


class DistillConfig(DetectionDistillConfig):
    """The loss terms summed with their weights (keys are the names used in metrics), and, for
    ``task: detection``, the YOLC KD settings."""

    terms: dict[str, LossTermConfig] = Field(default_factory=_default_terms)
    online_ratio: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of samples whose teacher runs in the worker instead of reading the store "
        "(the seed design uses 0.2)",
    )
