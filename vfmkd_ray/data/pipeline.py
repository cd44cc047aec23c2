"""The training streams' decode stage: store rows (or plain image rows) -> training samples
(``TrainSampleDecoder``); the precompute's image stage is ``data.image_loader``.

These are plain callables for ``Dataset.map_batches``; they import nothing from Ray, so they are
testable on in-memory batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vfmkd_ray.data.annotation_checks import BadAnnotationError
from vfmkd_ray.data.arrow_columns import numpy_columns
from vfmkd_ray.data.augment.block import BlockAugmentation, decoded_sample
from vfmkd_ray.data.augment.record import AugmentRecord
from vfmkd_ray.data.augment.replay import Sample
from vfmkd_ray.data.bad_samples import BadSample, BadSampleLog
from vfmkd_ray.data.coco import ImageAnnotations
from vfmkd_ray.data.config import DEFAULT_MAX_IMAGE_PIXELS
from vfmkd_ray.data.feature_keys import feature_key
from vfmkd_ray.data.image_ids import IMAGE_ID_COLUMN, encode_image_id
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.samples import load_sample, read_image
from vfmkd_ray.data.views import (
    VIEW_CONTEXT_COLUMN,
    VIEW_RECORD_COLUMN,
    ViewContext,
)
from vfmkd_ray.data.warped_features import covered_everywhere, warp_sources, warped_features
from vfmkd_ray.store import codecs
from vfmkd_ray.store.errors import StoreMadeOtherwiseError
from vfmkd_ray.store.index_rows import VIEW_COLUMN
from vfmkd_ray.store.manifest import Manifest, StoreDataset
from vfmkd_ray.store.reader import FeatureStoreError, decode_row
from vfmkd_ray.store.row_index import StoreRowIndex
from vfmkd_ray.store.schema import feature_column, scale_column

ONLINE_COLUMN = "online"  # 1 where the worker runs the teacher instead of using stored features
SAMPLE_KEY_COLUMN = "sample_key"  # int64 hash of the image id: what an epoch's data position lists
STORED_BYTES_COLUMN = "stored_bytes"  # equals store.ray_source.STORED_BYTES_COLUMN
ANNOTATIONS_COLUMN = "annotations"  # ImageAnnotations as JSON text ("" for none)


@dataclass(frozen=True)
class AugmentedBlock:
    """One block's augmented samples by image id: their records, replayed columns, the original
    image sizes and the rows' ``aug_seed`` (whether a stored row is of the mirrored image)."""

    records: dict[str, AugmentRecord]
    columns: dict[str, dict[str, np.ndarray]]
    image_hw: dict[str, tuple[int, int]]
    aug_seeds: dict[str, int]
    viewed: bool = False  # the records are the rows' stored views: their maps need no warp


@dataclass(frozen=True)
class SampleSpec:
    """How every sample of a run is made: letterbox side, the seeded augmentation the stores were
    made with, and the ground truth the heads need (``heads.base.DataNeeds``)."""

    input_size: int
    augment: str
    max_objects: int = 0
    max_masks: int = 0
    pipeline: BlockAugmentation | None = None  # data.augment's, for the training streams


def sample_key(image_id: str) -> int:
    """A stable signed 64-bit key of an image id (collisions at 2^-64: never in a real dataset)."""
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "little", signed=True)


class TrainSampleDecoder:
    """Rows of one stream -> ``image`` (uint8), ``valid_hw``, ``online``, the ground truth the heads
    need (``data.targets`` columns), ``stored_bytes`` and ``sample_key`` (for the run's accounting
    and in-epoch data position) and, per stored teacher, ``<alias>/feat.L`` in stored form
    (``teacher_column``).

    Rows stream from the primary store's row groups of one split and view (``training.streams`` plans
    them, so no other rows are read; or, when no teacher has a store, they are plain image rows);
    the other stores' rows are read by image id and view through their ``StoreRowIndex``. Rows whose
    ``sample_key`` is in ``position`` (a ``training.data_position`` handle: rows an interrupted epoch
    already trained on) are dropped. With a ``bad_samples`` log, a row whose image, annotations
    (a mask that cannot be decoded) or features cannot be used is recorded and skipped; without one
    it raises, naming the image and URI (and annotation).
    Images above ``max_pixels`` (``data.max_image_pixels``) are such rows.
    """

    def __init__(
        self,
        primary: StoreDataset | None,
        spec: SampleSpec,
        bad_samples: BadSampleLog | None = None,
        online_ratio: float = 0.0,
        others: tuple[StoreRowIndex, ...] = (),
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        position=None,
    ):
        self.primary, self.others, self.spec = primary, others, spec
        self.bad_samples = bad_samples
        self.online_ratio = online_ratio
        self.max_pixels = max_pixels
        self.position = position

    def __call__(self, batch: dict[str, np.ndarray] | pa.Table) -> Iterator[dict[str, np.ndarray]]:
        if isinstance(batch, pa.Table):  # the training streams' blocks: binary values not copied
            batch = numpy_columns(batch)
        # A generator, so a batch with no usable row yields nothing: zero-row tensor columns would
        # make Ray Data fall back to pickling the whole column.
        # Seeded from fresh OS entropy per call: a generator made in __init__ would be pickled into
        # every task with the same state and draw the same "random" samples every epoch.
        rng = np.random.default_rng()
        ids = [str(image_id) for image_id in batch["image_id"]]
        views = [int(v) for v in batch.get(VIEW_COLUMN, np.zeros(len(ids), np.int64))]
        keys = [sample_key(image_id) for image_id in ids]
        stored_bytes = batch.get(STORED_BYTES_COLUMN, np.zeros(len(ids), np.int64))
        done = self.position.trained(keys) if self.position is not None else frozenset()
        rows = [row for row in range(len(ids)) if keys[row] not in done]
        online = {row: self._is_online(batch, row, (ids[row], views[row]), rng) for row in rows}
        augmented = self._augmented(batch, rows, ids)
        # Both warped and viewed targets travel with coverage columns (a view's covers everything).
        coverage = augmented is not None and self.primary is not None
        warp = coverage and not augmented.viewed
        # Under warp a sample's mosaic partners need their stored rows too, online or not.
        read = [row for row in rows if not online[row] or (warp and self._in_every_store(batch, row, views))]
        other_rows = [(index, index.read_rows([(ids[r], views[r]) for r in read])) for index in self.others]
        stored = {
            row: self._stored_or_error(batch, row, other_rows, position) for position, row in enumerate(read)
        }
        rows = [row for row in rows if augmented is None or ids[row] in augmented.columns]
        block_rows = {ids[r]: stored[r] for r in read if not isinstance(stored[r], FeatureStoreError)}
        sources = warp_sources(self._stores(), augmented.aug_seeds, block_rows) if warp else []
        samples = []
        for row in rows:
            try:
                if online[row]:
                    features = self._placeholders(covered=coverage)
                elif isinstance(stored[row], FeatureStoreError):
                    raise stored[row]
                elif warp:
                    features = warped_features(augmented.records[ids[row]], augmented.image_hw, sources)
                elif coverage:
                    self._check_view(batch, row)
                    features = stored[row] | self._covered_everywhere()
                else:
                    features = stored[row]
                # A fresh draw of instances per epoch: each image's masks all get their turn.
                mask_seed = int(rng.integers(2**31))
                if augmented is None:
                    sample = self._sample(batch, row, online[row], features, mask_seed)
                else:
                    sample = {
                        **augmented.columns[ids[row]],
                        ONLINE_COLUMN: np.uint8(online[row]),
                        IMAGE_ID_COLUMN: encode_image_id(ids[row]),
                        **features,
                    }
                sample[SAMPLE_KEY_COLUMN] = np.int64(keys[row])
                sample[STORED_BYTES_COLUMN] = np.int64(stored_bytes[row])
                samples.append(sample)
            except (BadImageError, BadAnnotationError, FeatureStoreError) as err:
                if self.bad_samples is None or isinstance(err, StoreMadeOtherwiseError):
                    raise  # a store of other canvases is wrong for every row: no skip policy
                uri = str(batch["image_uri"][row])
                self.bad_samples.record(BadSample(ids[row], uri, "train", str(err)))
        if samples:
            yield {column: np.stack([s[column] for s in samples]) for column in samples[0]}

    def _augmented(
        self, batch: dict[str, np.ndarray], rows: list[int], ids: list[str]
    ) -> AugmentedBlock | None:
        """With ``spec.pipeline``: each row's image decoded once (a bad one recorded and left out
        of every mosaic), a record per row drawn for the epoch the data position says, and the
        replayed samples; None without a pipeline."""
        pipeline = self.spec.pipeline
        if pipeline is None:
            return None
        if VIEW_CONTEXT_COLUMN in batch:
            return self._viewed(batch, rows, ids)
        decoded: dict[str, Sample] = {}
        for row in rows:
            try:
                annotations = None
                if self.spec.max_objects:
                    annotations = ImageAnnotations.from_json(str(batch[ANNOTATIONS_COLUMN][row]))
                image = read_image(str(batch["image_uri"][row]), self.max_pixels)
                decoded[ids[row]] = decoded_sample(image, annotations)
            except (BadImageError, BadAnnotationError) as err:
                if self.bad_samples is None:
                    raise
                self.bad_samples.record(BadSample(ids[row], str(batch["image_uri"][row]), "train", str(err)))
        epoch = self.position.epoch() if self.position is not None else 0
        good = list(decoded)
        records = dict(zip(good, pipeline.records(epoch, good), strict=True))
        return AugmentedBlock(
            records,
            {image_id: pipeline.columns(record, decoded) for image_id, record in records.items()},
            {image_id: sample.image.shape[:2] for image_id, sample in decoded.items()},
            {ids[row]: int(batch["aug_seed"][row]) for row in rows},
        )

    def _viewed(self, batch: dict[str, np.ndarray], rows: list[int], ids: list[str]) -> AugmentedBlock:
        """A block of stored views: each row's record from its ``ViewContext`` (the run's own draw),
        replayed at the student's size on the images its context names; a row whose image or
        partner cannot be used is recorded and left out."""
        pipeline = self.spec.pipeline
        epoch = self.position.epoch() if self.position is not None else 0
        records: dict[str, AugmentRecord] = {}
        columns: dict[str, dict[str, np.ndarray]] = {}
        for row in rows:
            context = ViewContext.from_json(str(batch[VIEW_CONTEXT_COLUMN][row]))
            # Partners come from the whole split, so a block rarely shares them: each row's images
            # are decoded for it alone and dropped once its sample is made.
            try:
                decoded = {
                    image_id: self._decoded(image_id, uri, notes, ids[row])
                    for image_id, (uri, notes) in context.sources.items()
                }
            except (BadImageError, BadAnnotationError) as err:
                if self.bad_samples is None:
                    raise
                self.bad_samples.record(BadSample(ids[row], str(batch["image_uri"][row]), "train", str(err)))
                continue
            records[ids[row]] = pipeline.view_record(AugmentRecord.from_json(context.record), epoch)
            columns[ids[row]] = pipeline.columns(records[ids[row]], decoded)
        return AugmentedBlock(
            records, columns, {}, {ids[row]: int(batch["aug_seed"][row]) for row in rows}, viewed=True
        )

    def _decoded(self, image_id: str, uri: str, annotations_json: str, sample_id: str) -> Sample:
        """One image of sample ``sample_id``'s view and its boxes; a partner's error says whose
        partner it is."""
        try:
            annotations = None
            if self.spec.max_objects and annotations_json:
                annotations = ImageAnnotations.from_json(annotations_json)
            return decoded_sample(read_image(uri, self.max_pixels), annotations)
        except (BadImageError, BadAnnotationError) as err:
            if image_id == sample_id:
                raise
            raise type(err)(f"mosaic partner {image_id} of a view of image {sample_id}: {err}") from None

    def _check_view(self, batch: dict[str, np.ndarray], row: int) -> None:
        """A stored view is of the record this run draws for it, or its map is of another canvas."""
        drawn = ViewContext.from_json(str(batch[VIEW_CONTEXT_COLUMN][row])).record
        if _text(batch, VIEW_RECORD_COLUMN, row) != drawn:
            raise StoreMadeOtherwiseError(
                f"image {batch['image_id'][row]}: store {self.primary.uri} holds the teacher's map of "
                "another canvas than this run draws for its view (parts left by a precompute of another "
                "config, or another dataset): precompute the views into a fresh store.root"
            )

    def _covered_everywhere(self) -> dict[str, np.ndarray]:
        return {
            teacher_column(store.alias, column): value
            for store in self._stores()
            for column, value in covered_everywhere(store.manifest).items()
        }

    def _stores(self) -> list[StoreDataset]:
        return [] if self.primary is None else [self.primary, *(index.store for index in self.others)]

    def _in_every_store(self, batch: dict[str, np.ndarray], row: int, views: list[int]) -> bool:
        key = (str(batch["image_id"][row]), views[row])
        return not self._is_placeholder(batch, row) and all(key in index for index in self.others)

    def _is_placeholder(self, batch: dict[str, np.ndarray], row: int) -> bool:
        return len(batch[feature_column(next(iter(self.primary.manifest.layers)))][row]) == 0

    def _stored_or_error(
        self, batch, row: int, other_rows, position: int
    ) -> dict[str, np.ndarray] | FeatureStoreError:
        try:
            return self._stored_features(batch, row, other_rows, position)
        except FeatureStoreError as err:
            return err

    def _is_online(
        self, batch: dict[str, np.ndarray], row: int, key: tuple[str, int], rng: np.random.Generator
    ) -> bool:
        if self.primary is None:
            return False  # no stored teacher: every teacher runs live on every sample
        if self._is_placeholder(batch, row):
            return True  # a placeholder row: no stored features (missing_features: online)
        if any(key not in index for index in self.others):
            return True  # the driver lets such ids through only under missing_features: online
        return bool(rng.random() < self.online_ratio)

    def _stored_features(
        self,
        batch: dict[str, np.ndarray],
        row: int,
        other_rows: list[tuple[StoreRowIndex, dict[str, list]]],
        position: int,
    ) -> dict[str, np.ndarray]:
        primary = self.primary
        if primary is None:
            return {}
        features = _prefixed(primary.alias, decode_row(batch, row, primary.manifest, primary.uri))
        for index, rows in other_rows:
            store = index.store
            if rows["aug_seed"][position] != int(batch["aug_seed"][row]):
                raise FeatureStoreError(
                    f"image {batch['image_id'][row]} was augmented with seed {rows['aug_seed'][position]} "
                    f"in store {store.uri} but {batch['aug_seed'][row]} in {primary.uri}: "
                    "precompute every teacher with the same seed"
                )
            if _text(rows, VIEW_RECORD_COLUMN, position) != _text(batch, VIEW_RECORD_COLUMN, row):
                raise StoreMadeOtherwiseError(
                    f"image {batch['image_id'][row]}'s view is of another canvas in store {store.uri} "
                    f"than in {primary.uri}: precompute every teacher's views with the same config"
                )
            features |= _prefixed(store.alias, decode_row(rows, position, store.manifest, store.uri))
        return features

    def _placeholders(self, covered: bool = False) -> dict[str, np.ndarray]:
        """Zero features for the worker's teachers to fill; ``covered``: with warp's coverage
        columns, all ones (the live teacher sees the whole canvas)."""
        features = {}
        for store in self._stores():
            columns = placeholder_features(store.manifest)
            features |= _prefixed(
                store.alias, columns | (covered_everywhere(store.manifest) if covered else {})
            )
        return features

    def _sample(
        self,
        batch: dict[str, np.ndarray],
        row: int,
        online: bool,
        features: dict[str, np.ndarray],
        mask_seed: int,
    ) -> dict[str, np.ndarray]:
        spec = self.spec
        annotations = None
        if spec.max_objects:
            annotations = ImageAnnotations.from_json(str(batch[ANNOTATIONS_COLUMN][row]))
        sample = load_sample(
            str(batch["image_uri"][row]),
            annotations,
            spec.input_size,
            int(batch["aug_seed"][row]),
            spec.augment,
            spec.max_objects,
            spec.max_masks,
            mask_seed,
            self.max_pixels,
        )
        image_id = encode_image_id(str(batch["image_id"][row]))
        return {**sample, ONLINE_COLUMN: np.uint8(online), IMAGE_ID_COLUMN: image_id, **features}


def _text(columns: dict, name: str, row: int) -> str:
    """Row ``row`` of a string column, "" where the columns have none (a store without views)."""
    values = columns.get(name)
    return "" if values is None else str(values[row])


def teacher_column(alias: str, column: str) -> str:
    """A store column of teacher ``alias`` in the training stream, e.g. ``dino/feat.patch_tokens``."""
    return feature_key(alias, column)


def _prefixed(alias: str, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {teacher_column(alias, name): value for name, value in columns.items()}


def placeholder_features(manifest: Manifest) -> dict[str, np.ndarray]:
    """Zero arrays in stored form for a sample whose features the worker computes online."""
    dtype = codecs.stored_dtype(manifest.codec)
    arrays = {}
    for layer, spec in manifest.layers.items():
        arrays[feature_column(layer)] = np.zeros(spec.shape, dtype)
        if manifest.codec == "int8":
            arrays[scale_column(layer)] = np.ones(spec.shape[0], np.float32)
    return arrays
