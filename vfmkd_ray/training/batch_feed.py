"""``BatchFeed``: a worker's shard of torch batches -> ``Batch``es on the training device.

Stored features are decoded from their codec on the device (with, for targets warped into an
augmented canvas, the cells a stored map covers); samples marked online get their stored
teachers' features from the live teachers; teachers without a store (``RunStores.live``) run on
every sample; the ground-truth columns the heads asked for become tensors. Frozen teachers are
never wrapped in DDP. A training pass may shuffle its rows in a local buffer first (``data.shuffle``,
seeded per epoch and rank: ``data.epoch_order``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vfmkd_ray.batch import Batch
from vfmkd_ray.data.feature_keys import split_feature_key
from vfmkd_ray.data.image_ids import IMAGE_ID_COLUMN
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.pipeline import ONLINE_COLUMN, SAMPLE_KEY_COLUMN, STORED_BYTES_COLUMN, teacher_column
from vfmkd_ray.data.samples import IMAGE_COLUMN, VALID_HW_COLUMN
from vfmkd_ray.data.targets import BOXES_COLUMN, LABELS_COLUMN, MASK_BOX_COLUMN, MASKS_COLUMN
from vfmkd_ray.data.warped_features import covered_column
from vfmkd_ray.models.teachers.base import FrozenTeacher
from vfmkd_ray.models.teachers.ensemble import run_teachers
from vfmkd_ray.store import codecs
from vfmkd_ray.store.schema import feature_column, scale_column


@dataclass(frozen=True)
class BatchFeed:
    teacher_keys: frozenset[str]  # <alias>/<layer> read by some term or head
    codecs: dict[str, str]  # stored teacher alias -> its store's codec
    device: torch.device
    batch_size: int
    prefetch_batches: int
    # By alias: stored teachers (run on samples marked online) and live ones (run on every sample).
    stored_teachers: dict[str, FrozenTeacher] = field(default_factory=dict)
    live_teachers: dict[str, FrozenTeacher] = field(default_factory=dict)
    shuffle_buffer: int = 0  # rows of the local shuffle buffer of a shuffled pass (data.shuffle_buffer)
    channel_stats: dict[str, torch.Tensor] = field(default_factory=dict)  # <alias>/<layer> -> 2 x C
    phi_s: dict[str, torch.Tensor] = field(default_factory=dict)  # <alias>/<layer> -> (1 + C) x C

    def batches(self, shard, drop_last: bool, shuffle_seed: int | None = None):
        """``shuffle_seed``: the pass shuffles its rows in a local buffer of ``shuffle_buffer`` rows
        (at least a batch) seeded by it; None (validation): in the order they come."""
        shuffled = self.shuffle_buffer > 0 and shuffle_seed is not None
        buffer = max(self.shuffle_buffer, self.batch_size) if shuffled else None
        for raw in shard.iter_torch_batches(
            batch_size=self.batch_size,
            drop_last=drop_last,
            prefetch_batches=self.prefetch_batches,
            local_shuffle_buffer_size=buffer,
            local_shuffle_seed=shuffle_seed if shuffled else None,
            # Ray copies each batch to the worker's device in its prefetch thread; from pinned
            # host memory that copy is asynchronous and faster.
            pin_memory=self.device.type == "cuda",
        ):
            yield self.to_batch(raw)

    def to_batch(self, raw: dict[str, torch.Tensor]) -> Batch:
        images = normalize(raw[IMAGE_COLUMN].to(self.device))
        features = self._stored(raw)
        online = raw[ONLINE_COLUMN].to(self.device).bool()
        num_online = int(online.sum())
        if num_online and features:
            if not self.stored_teachers:
                raise RuntimeError("samples are marked online but the worker has no teachers")
            live = run_teachers(self.stored_teachers, images[online])
            for key in features:
                features[key][online] = live[key].float()
        if self.live_teachers:
            live = run_teachers(self.live_teachers, images)
            features |= {key: live[key].float() for key in self.teacher_keys if key in live}
        targets = {name: raw[column].to(self.device) for name, column in _TARGETS.items() if column in raw}
        return Batch(
            images_BCHW=images,
            valid_hw_B2=raw[VALID_HW_COLUMN].to(self.device),
            teacher_features=features,
            teacher_coverage=self._coverage(raw),
            teacher_stats={key: stats.to(self.device) for key, stats in self.channel_stats.items()},
            teacher_phi_s={key: packed.to(self.device) for key, packed in self.phi_s.items()},
            num_online=num_online if features else 0,
            image_ids_BL=raw.get(IMAGE_ID_COLUMN),
            sample_keys_B=raw[SAMPLE_KEY_COLUMN].cpu() if SAMPLE_KEY_COLUMN in raw else None,
            stored_bytes=int(raw[STORED_BYTES_COLUMN].sum()) if STORED_BYTES_COLUMN in raw else 0,
            **targets,
        )

    def _stored(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = {}
        for key in self.teacher_keys:
            alias, layer = split_feature_key(key)
            if alias not in self.codecs:
                continue  # a live teacher's
            scale = raw.get(teacher_column(alias, scale_column(layer)))
            features[key] = codecs.to_float32(
                raw[teacher_column(alias, feature_column(layer))].to(self.device),
                self.codecs[alias],
                None if scale is None else scale.to(self.device),
            )
        return features

    def _coverage(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The stored targets warped into augmented canvases: which of their cells a map covers."""
        coverage = {}
        for key in self.teacher_keys:
            alias, layer = split_feature_key(key)
            column = raw.get(teacher_column(alias, covered_column(layer)))
            if column is not None:
                coverage[key] = column.to(self.device).float().unsqueeze(1)
        return coverage


_TARGETS = {
    "boxes_BN4": BOXES_COLUMN,
    "labels_BN": LABELS_COLUMN,
    "masks_BMhw": MASKS_COLUMN,
    "mask_box_BM": MASK_BOX_COLUMN,
}
