"""``_manifest.json``: what a feature-store dataset holds and how it was made."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from vfmkd_ray import storage
from vfmkd_ray.data.coco import ImageRecord
from vfmkd_ray.data.views import VIEW_PIPELINE, view_spec
from vfmkd_ray.store.channel_stats import ChannelStats
from vfmkd_ray.store.phi_s import PhiSFile

if TYPE_CHECKING:
    from vfmkd_ray.config import ExperimentConfig

MANIFEST_NAME = "_manifest.json"
BAD_SAMPLES_DIR = "_bad_samples"  # what precompute skipped, one record per image


class LayerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shape: tuple[int, int, int]
    stride: int


class Manifest(BaseModel):
    """One teacher at one input size; ``row_count`` equals the rows of all parts together."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    teacher: str
    teacher_weights: str
    input_size: int
    layers: dict[str, LayerSpec]
    codec: str
    augment: str
    row_count: int
    num_parts: int
    num_skipped: int = 0  # dataset images without a row: unreadable at precompute (on_bad_sample: skip)
    dataset_fingerprint: str
    views_per_image: int = 1  # rows per image: augmented views with seeds per view (store.index)
    index_sha256: str = ""  # the store.index file this manifest names ("" for stores made before it)
    # Per layer, the per-channel mean and std of the stored values (None for stores made before them).
    channel_stats: dict[str, ChannelStats] | None = None
    # The PHI-S transforms of its layers (store.phi_s), for normalize: phi_s; None: made before them.
    phi_s: PhiSFile | None = None
    # What the augmented views were drawn with (data.views.view_spec); None: no augmented views.
    view_spec: dict[str, Any] | None = None

    def describe_mismatch(self, expected: dict[str, Any]) -> list[str]:
        """The fields whose values differ from ``expected``, as readable lines."""
        return [
            f"{key}: store has {getattr(self, key)!r}, run asks for {value!r}"
            for key, value in expected.items()
            if getattr(self, key) != value
        ]


@dataclass(frozen=True)
class StoreDataset:
    """A store dataset as a run uses it: the teacher alias it serves, its URI and its manifest."""

    alias: str
    uri: str
    manifest: Manifest


def dataset_fingerprint(records: list[ImageRecord]) -> str:
    """sha256 over the dataset's (image id, image URI) pairs: which dataset a store was made from."""
    digest = hashlib.sha256()
    for image_id, uri in sorted((r.image_id, r.image_uri) for r in records):
        digest.update(f"{image_id}\t{uri}\n".encode())
    return digest.hexdigest()


def dataset_uri(store_root: str, teacher: str, input_size: int) -> str:
    return storage.join(storage.absolute(store_root), teacher, str(input_size))


def teacher_dataset(cfg: ExperimentConfig, alias: str) -> str:
    """``<store.root>/<teacher name>/<input_size>``: where the store of teacher ``alias`` lives."""
    teacher = cfg.teachers[alias]
    return dataset_uri(cfg.store.root, teacher.name, teacher.input_size)


def expected_manifest_fields(cfg: ExperimentConfig, alias: str, weights_id: str) -> dict:
    """The manifest fields that say which store teacher ``alias`` of ``cfg`` needs: what precompute
    writes, and what training and ``verify`` hold a store to."""
    teacher = cfg.teachers[alias]
    return {
        "teacher": teacher.name,
        "teacher_weights": weights_id,
        "input_size": teacher.input_size,
        "codec": cfg.store.codec,
        "augment": cfg.store.augment,
        "views_per_image": cfg.store.views_per_image,
        "view_spec": (
            view_spec(cfg.student.size, cfg.input_size, cfg.seed, cfg.data.val_fraction)
            if cfg.store.augment == VIEW_PIPELINE
            else None
        ),
    }


def read_manifest(dataset: str) -> Manifest | None:
    uri = storage.join(dataset, MANIFEST_NAME)
    if not storage.exists(uri):
        return None
    try:
        return Manifest.model_validate(json.loads(storage.read_text(uri)))
    except (json.JSONDecodeError, ValueError) as err:
        raise ValueError(f"corrupt feature-store manifest {uri}: {err}") from None


def write_manifest(dataset: str, manifest: Manifest) -> None:
    storage.write_text_atomic(
        storage.join(dataset, MANIFEST_NAME), json.dumps(manifest.model_dump(mode="json"), indent=2)
    )


def normalized_targets(cfg: ExperimentConfig, terms: dict, normalize: str):
    """Per teacher target that a term of ``terms`` standardises by ``normalize`` (its store's
    ``channel`` statistics or ``phi_s`` transform): the term's name, the target's key, the
    teacher's alias and layer, its store's URI and manifest (None: no store)."""
    from vfmkd_ray.data.feature_keys import split_feature_key

    for name, term in terms.items():
        if term.normalize != normalize:
            continue
        for key in term.teacher_layers:
            alias, layer = split_feature_key(key)
            dataset = teacher_dataset(cfg, alias)
            yield name, key, alias, layer, dataset, read_manifest(dataset)
