"""Config of the distillation loss terms: a named, weighted set of registered terms."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from vfmkd_ray.reads import ReaderConfig, Reads
from vfmkd_ray.schema import StrictModel

StudentSource = Literal["backbone", "neck"]
SOURCE_HELP = "which student levels the term reads: the backbone's, or the neck's (neck: ...)"


class AdaptiveWeightConfig(StrictModel):
    """A term's weight steered by its share of the backbone's gradient (RT-DETRv4's GAM): each
    epoch, a mean share outside ``rho +/- delta`` rescales the weight towards the band (at most
    x0.1-x10 per epoch); the close-mosaic epochs use the configured weight."""

    rho: float = Field(0.1, gt=0.0, lt=1.0, description="the target share of the backbone's gradient norm")
    delta: float = Field(0.02, ge=0.0, lt=1.0, description="the half-width of the band left alone")
    probe_every: int = Field(10, ge=1, description="steps between two measurements of the share")

    @model_validator(mode="after")
    def _band_inside(self) -> AdaptiveWeightConfig:
        if not (self.rho - self.delta > 0.0 and self.rho + self.delta < 1.0):
            raise ValueError(
                f"rho - delta and rho + delta must lie in (0, 1), got {self.rho} +/- {self.delta}"
            )
        return self


class TeacherTermConfig(ReaderConfig):
    """What every term that reads a teacher sets: its weight, the student level it adapts and the
    teacher output it is compared with."""

    weight: float = Field(1.0, ge=0)
    student_stride: int = 16
    student_source: StudentSource = Field("backbone", description=SOURCE_HELP)
    teacher: str | None = Field(None, description="teacher alias; default: the primary teacher")
    teacher_layer: str | None = Field(None, description="default: the teacher's first stored layer")
    adaptive: AdaptiveWeightConfig | None = Field(
        None, description="steer the weight by the term's share of the backbone's gradient (RT-DETRv4's GAM)"
    )
    normalize: Literal["none", "channel", "phi_s"] = Field(
        "none",
        description="none: the teacher's raw values; channel: each channel standardised by the mean and "
        "std of the teacher's whole store (kept in its manifest at precompute), so the term's scale "
        "no longer depends on the teacher's; phi_s: RADIO's PHI-S, the map rotated by its store's PCA "
        "and a Hadamard matrix and scaled by one number, so every channel has variance 1 and the "
        "map's geometry is kept",
    )

    def reads(self) -> Reads:
        return Reads(teachers={"teacher": self.teacher})  # None: the primary teacher


class FeatureMSEConfig(TeacherTermConfig):
    """Masked MSE between the adapted student level and the teacher feature map."""

    type: Literal["feature_mse"] = "feature_mse"


class EdgeConfig(ReaderConfig):
    """BCE between an edge head on a fine student level and the Sobel edges of the input image."""

    type: Literal["edge"] = "edge"
    weight: float = Field(0.5, ge=0)
    student_stride: int = 4
    student_source: StudentSource = Field("backbone", description=SOURCE_HELP)


class FGDConfig(TeacherTermConfig):
    """Focal and global distillation (Yang et al., CVPR 2022) of a detection student's features,
    with ground-truth boxes as the foreground mask."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    type: Literal["fgd"] = "fgd"
    student_stride: int = 4
    temperature: float = Field(0.5, gt=0)
    alpha: float = Field(1e-3, ge=0, description="foreground feature loss")
    beta: float = Field(5e-4, ge=0, description="background feature loss")
    gamma: float = Field(1e-3, ge=0, description="attention loss")
    lambda_: float = Field(5e-6, ge=0, alias="lambda", description="global (relation) loss")

    def reads(self) -> Reads:
        return replace(super().reads(), boxes=True)  # the foreground mask


class CosineConfig(TeacherTermConfig):
    """1 - cosine similarity per position between the adapted student level and the teacher map
    (RT-DETRv4's feature KD), averaged over the positions the target holds."""

    type: Literal["cosine"] = "cosine"


class CWDConfig(TeacherTermConfig):
    """Channel-wise distillation (Shu et al., ICCV 2021): per channel, the KL divergence between the
    teacher's and the student's softmax over spatial positions at a temperature."""

    type: Literal["cwd"] = "cwd"
    temperature: float = Field(4.0, gt=0, description="the paper uses 4 for detection")


LossTermConfig = Annotated[
    FeatureMSEConfig | CosineConfig | EdgeConfig | FGDConfig | CWDConfig, Field(discriminator="type")
]


class DistillConfig(StrictModel):
    """The feature-KD terms summed with their weights (keys are the names used in metrics), and how
    their teacher targets are obtained."""

    terms: dict[str, LossTermConfig] = Field(default_factory=dict)
    online_ratio: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of samples whose teacher runs in the worker instead of reading the store "
        "(the seed design uses 0.2)",
    )
