"""Config of the image dataset a run reads."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from vfmkd_ray.data.augment.config import AugmentConfig
from vfmkd_ray.schema import StrictModel

DEFAULT_MAX_IMAGE_PIXELS = 100_000_000  # 10000 x 10000
YOLO_NAMES_FILE = "data.yaml"
SHARED_DECODE_CPUS = 0.25  # a decode task's share where no whole CPU is free beside the workers


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
    """A dataset: ``<root>/<images_dir>/`` plus ``<root>/<annotations>`` (a COCO file), a plain
    image folder when ``annotations`` is null (ids are the file names without extension), or YOLO
    labels (``format: yolo``)."""

    root: str = Field(
        "outputs/demo/data", description="the dataset's folder: a local path or s3://bucket/prefix"
    )
    format: Literal["coco", "yolo"] = Field(
        "coco",
        description="coco: data.annotations is a COCO json (null: a plain image folder); yolo: "
        "Ultralytics' layout, the images in data.images_dir, per image a <file stem>.txt in "
        "data.labels_dir of normalised 'class cx cy w h' boxes or 'class x1 y1 ... xn yn' polygons, "
        "the class names in data.annotations (default data.yaml, its names:)",
    )
    images_dir: str = Field("images", description="the images' folder under data.root")
    annotations: str | None = Field(
        "annotations.json",
        description="under data.root: the COCO annotations file (null: none, a plain image folder); "
        f"with format yolo the file of class names, {YOLO_NAMES_FILE} unless given",
    )
    labels_dir: str | None = Field(
        None,
        description="yolo: the label files' folder under data.root; default data.images_dir with its "
        "last images folder named labels (images/train -> labels/train), Ultralytics' rule",
    )
    val_fraction: float = Field(
        0.125,
        ge=0.0,
        lt=1.0,
        description="share of the images held out for validation, chosen by a hash of the image id "
        "(the same split every run)",
    )
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
    decode_num_cpus: Annotated[float, Field(gt=0)] | Literal["auto"] = Field(
        "auto",
        description="CPUs reserved per read/decode task. auto: a whole CPU when the cluster keeps one "
        "beside the Train workers (train.num_workers at most x train.cpus_per_worker, whole CPUs), so "
        "Ray runs no more decode tasks than free CPUs (at 0.25 it ran four per CPU: 0.90 of a torch "
        "DataLoader's images/s against 0.95 in 64-row parts, a pass's first batch 7.7 s against 2.0, "
        "benchmarks/data_plane); else 0.25, which fits beside workers that leave less than a CPU per "
        "node. Precompute's auto is 0.25 (its teacher actors "
        "hold the CPUs). A number is used as given",
    )

    def decode_cpus(self, free_cpus: float) -> float:
        """The CPUs a read/decode task reserves, ``free_cpus`` being what the cluster keeps beside
        the run's reserved workers (0 where they may leave no whole CPU on any node)."""
        if self.decode_num_cpus != "auto":
            return self.decode_num_cpus
        return 1.0 if free_cpus >= 1 else SHARED_DECODE_CPUS

    synthetic: SyntheticConfig = SyntheticConfig()
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="before")
    @classmethod
    def _yolo_names_file(cls, raw: Any) -> Any:
        """Under ``format: yolo`` an ``annotations`` not given is ``data.yaml``, written into the
        config so that it survives a dump (the workers', a run's ``resolved_config.yaml``)."""
        if isinstance(raw, dict) and raw.get("format") == "yolo" and "annotations" not in raw:
            return raw | {"annotations": YOLO_NAMES_FILE}
        return raw

    def yolo_labels_dir(self) -> str:
        """Under ``format: yolo``: ``labels_dir``, or ``images_dir`` with its last ``images``
        folder named ``labels`` (Ultralytics' rule)."""
        if self.labels_dir is not None:
            return self.labels_dir
        folders = self.images_dir.strip("/").split("/")
        for k in range(len(folders) - 1, -1, -1):
            if folders[k] == "images":
                return "/".join([*folders[:k], "labels", *folders[k + 1 :]])
        raise ValueError(
            f"data.images_dir {self.images_dir!r} has no folder named images to find the YOLO labels "
            "beside (Ultralytics' rule): set data.labels_dir"
        )

    def settings_without_effect(self) -> list[str]:
        """The settings given that this config does not use, one line each (without ``data.``)."""
        found = []
        if not self.shuffle and "shuffle_buffer" in self.model_fields_set and self.shuffle_buffer:
            found.append("shuffle_buffer has no effect: shuffle is false")
        if self.format == "coco" and self.labels_dir is not None:
            found.append("labels_dir has no effect: format is coco (labels_dir is for YOLO labels)")
        return found
