"""Config of the image dataset a run reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vfmkd_ray.data.augment.config import AugmentConfig
from vfmkd_ray.schema import StrictModel

DEFAULT_MAX_IMAGE_PIXELS = 100_000_000  # 10000 x 10000


class SyntheticConfig(StrictModel):
    """What ``vfmkd demo`` generates into ``data.root`` when the dataset is not there yet."""

    kind: Literal["shapes", "tiny_objects"] = Field(
        "shapes", description="large shapes (feature distillation) or dense tiny objects (detection)"
    )
    num_images: int = Field(64, ge=2)
    image_size: int = Field(256, ge=32)
    max_shapes: int = Field(6, ge=1)
    clusters: int = Field(3, ge=1, description="tiny_objects: most dense clusters per image")
    objects_per_cluster: int = Field(12, ge=2, description="tiny_objects: most objects per cluster")
    object_size: tuple[int, int] = Field((5, 10), description="tiny_objects: side range in pixels")
    seed: int = 0


class DataConfig(StrictModel):
    """A COCO-format dataset: ``<root>/<images_dir>/`` plus ``<root>/<annotations>``, or a plain
    image folder when ``annotations`` is null (ids are the file names without extension)."""

    root: str = "outputs/demo/data"
    images_dir: str = "images"
    annotations: str | None = "annotations.json"
    val_fraction: float = Field(0.125, ge=0.0, lt=1.0)
    label_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="share of the training split's images a run trains on, with their labels: a fixed "
        "subset chosen by image id, nested across fractions; the validation split is never reduced",
    )
    repeat: int = Field(
        1,
        ge=1,
        description="the training split is streamed this many times per epoch (MMDetection's "
        "RepeatDataset): a small split gets epochs of a useful length, not one validation pass per "
        "few steps; with a feature store each copy reads the store's parts again",
    )
    shuffle: bool = Field(
        True,
        description="a new training order every epoch, from (seed, epoch): each pass reads the parts "
        "(blocks) of the training stream in a permuted order, each part's rows permuted, and each "
        "worker shuffles its rows in a local buffer (data.shuffle_buffer); not one global permutation "
        "of the split, which a streamed, sharded store has not; validation is never shuffled",
    )
    shuffle_buffer: int = Field(
        64,
        ge=0,
        description="rows in each worker's local shuffle buffer when data.shuffle is on (Ray Data's "
        "local_shuffle_buffer_size, seeded from seed, epoch and rank; at least a batch: a smaller "
        "value is raised to train.batch_size); 0: none, the read order alone",
    )
    input_size: int | None = Field(
        None,
        ge=32,
        description="letterbox side the student trains at; default: the first teacher's input size",
    )
    on_bad_sample: Literal["error", "skip"] = Field(
        "error",
        description="a corrupt/missing image, a bad annotation or a bad feature row: stop, or skip the "
        "image and record it",
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS,
        ge=1024,
        description="largest width*height an image may have, read from its header before any pixel "
        "is decoded; a larger one is a bad sample (see on_bad_sample)",
    )
    missing_features: Literal["error", "online", "skip"] = Field(
        "error",
        description="a dataset image without a store row (or a teacher without a store): stop, run "
        "the teacher in the worker, or skip",
    )
    allow_store_from_other_dataset: bool = Field(
        False,
        description="train although a store's dataset fingerprint differs from this dataset's (on the "
        "images both hold); by default that is an error",
    )
    decode_num_cpus: float = Field(
        0.25,
        gt=0,
        description="CPUs reserved per read/decode task: a fraction fits beside Train workers that "
        "leave less than a CPU per node. 1 gives a CPU-bound decode (the yolov8 augmentation, warp) "
        "about 10 % more images/s on a small node (benchmarks/data_plane): Ray then runs no more tasks "
        "than CPUs and keeps their worker processes instead of restarting them",
    )
    synthetic: SyntheticConfig = SyntheticConfig()
    augment: AugmentConfig = AugmentConfig()

    def settings_without_effect(self) -> list[str]:
        """The settings given that this config does not use, one line each (without ``data.``)."""
        if not self.shuffle and "shuffle_buffer" in self.model_fields_set and self.shuffle_buffer:
            return ["shuffle_buffer has no effect: shuffle is false"]
        return []
