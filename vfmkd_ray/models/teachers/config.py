"""Config of the frozen teacher."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vfmkd_ray.schema import StrictModel


class TeacherConfig(StrictModel):
    """A registered teacher and where its weights come from.

    ``weights`` is a local path or fsspec URI of a checkpoint, or the literal ``random``; it has no
    default so a run never falls back to random weights by accident.
    """

    name: str = Field(
        "sam_vit_b",
        description="the teacher model (sam_vit_b, sam2_hiera_t, dinov2_vits14, dinov3_vits16, run...)",
    )
    weights: str | None = Field(
        None, description="its checkpoint: a path or s3:// URI of the released file, or random"
    )
    sha256: str | None = Field(None, description="the checkpoint's sha256, checked before it loads")
    input_size: int = Field(1024, ge=32, description="the side the teacher sees (letterboxed)")
    random_seed: int = Field(0, description="init seed when weights is 'random'")
    layers: list[str] | None = Field(
        None, description="the teacher layers to store and distill from; default: all of them"
    )
    under_augmentation: Literal["views", "warp", "online"] | None = Field(
        None,
        description="how a training sample under data.augment.pipeline gets this teacher's target: "
        "views trains the mosaic epochs on the augmented canvases its store holds (store.augment "
        "yolov8), replayed exactly for the student, and warps view 0 in the close-mosaic epochs; warp "
        "carries the stored maps of the plain images (the sample's and its mosaic partners') into its "
        "canvas by the same geometry, masking the cells no map covers (photometric steps are not "
        "replayed); online runs the teacher in the workers on every sample, its store unread. Required "
        "for a stored teacher under augmentation",
    )
