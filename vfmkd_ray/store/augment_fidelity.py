"""``vfmkd verify --augment N``: how exact is a stored teacher's target under augmentation?

N training samples are drawn from the store's own images with MMYOLO's YOLOv8 pipeline (always
mosaic; partners from a pool of the store's rows, as a block gives them), on a canvas of the
teacher's input size so that the live teacher sees it unresized. The live teacher's map of each
augmented canvas is the truth; three targets are compared with it, on the cells the warp covers:

- ``plain``: the sample's own stored map, not moved (what training would read if the target ignored
  the augmentation);
- ``warp (geometry)``: the stored maps warped into the canvas, against the teacher on the same
  canvas without its photometric steps: the teacher's own non-equivariance to resize, crop and
  flip;
- ``warp``: the same warp against the teacher on the full canvas (HSV, blur, gray too): what
  ``under_augmentation: warp`` trains on;
- ``view`` (a store of augmented views, ``store.augment: yolov8``): N stored views against the
  teacher on their canvas, replayed from the row's record, over every cell: what
  ``under_augmentation: views`` trains on (the codec's error, if the replay is exact).

The warp's maps are the plain view 0's.

Per layer: the mean per-cell cosine (over channels) and the relative error ``|target - live| /
|live|`` over the covered cells, and the covered share. Written as ``augment_fidelity.json`` next
to the store.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from vfmkd_ray import storage
from vfmkd_ray.data.augment.block import decoded_sample
from vfmkd_ray.data.augment.feature_warp import StoredMap, record_sources, warp_stored_maps
from vfmkd_ray.data.augment.recipe import yolov8_spec
from vfmkd_ray.data.augment.record import AugmentRecord, DrawContext, draw_record
from vfmkd_ray.data.augment.replay import replay
from vfmkd_ray.data.image_loader import view_canvas
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.images import is_flipped
from vfmkd_ray.data.samples import read_image
from vfmkd_ray.data.views import VIEW_RECORD_COLUMN, VIEW_SOURCES_COLUMN
from vfmkd_ray.data.warped_features import float_map
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.store.manifest import Manifest, read_manifest
from vfmkd_ray.store.parts import list_parts, read_part
from vfmkd_ray.store.reader import FeatureStoreError, decode_row

FIDELITY_FILE = "augment_fidelity.json"
WAYS = ("plain", "warp (geometry)", "warp")
POOL = 16  # rows the mosaic partners are drawn from, at least


@dataclass(frozen=True)
class WayFidelity:
    cosine: float  # mean over samples of the mean per-cell cosine
    relative_error: float  # mean over samples
    cosines: list[float]  # per sample


@dataclass(frozen=True)
class LayerFidelity:
    layer: str
    samples: int
    covered: float  # mean share of the target's cells a stored map covers
    ways: dict[str, WayFidelity]


@dataclass(frozen=True)
class FidelityReport:
    dataset: str
    teacher: str
    teacher_weights: str
    canvas: int
    student_size: str
    layers: list[LayerFidelity]

    def lines(self) -> list[str]:
        head = f"{'layer':<16} {'way':<16} {'cosine':>8} {'rel err':>8}  samples  covered"
        out = [head]
        for layer in self.layers:
            for way, figures in layer.ways.items():
                out.append(
                    f"{layer.layer:<16} {way:<16} {figures.cosine:>8.4f} {figures.relative_error:>8.4f}"
                    f"  {len(figures.cosines):>7}  {layer.covered if way != 'view' else 1.0:>7.2f}"
                )
        return out


def measure_augment_fidelity(
    dataset: str, samples: int, teacher_cfg: TeacherConfig, seed: int = 0, student_size: str = "s"
) -> FidelityReport:
    """Draws ``samples`` augmented samples from the store at ``dataset`` and compares each way's
    target with ``teacher_cfg``'s teacher (the store's, ``verify.teacher_config``) on the canvas."""
    manifest = read_manifest(dataset)
    if manifest is None:
        raise FeatureStoreError(f"no feature store manifest at {dataset}")
    pool = _pool(dataset, manifest, max(samples, POOL), seed)
    if not pool:
        raise FeatureStoreError(f"store {dataset} has no rows to draw augmented samples from")
    teacher = build_teacher(teacher_cfg)
    spec = yolov8_spec(student_size, close_mosaic_epochs=0)
    context = DrawContext(seed, 0, 1, manifest.input_size)
    ids = list(pool)
    records = [draw_record(spec, context, image_id, ids) for image_id in ids[:samples]]
    decoded = {image_id: decoded_sample(row.image, None) for image_id, row in pool.items()}
    ways = (*WAYS, "view") if manifest.view_spec else WAYS
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {
        layer: {way: [] for way in ways} for layer in manifest.layers
    }
    covered: dict[str, list[float]] = {layer: [] for layer in manifest.layers}
    for record in records:
        if record.mixup_with is not None:
            continue  # a blend of two canvases has no warped target (feature_warp)
        full = _live(teacher, replay(record, decoded.__getitem__, spec).image)
        geometric = _live(teacher, replay(_geometry_only(record), decoded.__getitem__, spec).image)
        for layer, layer_spec in manifest.layers.items():
            maps = [pool[i].stored_map(layer, manifest.codec) for i in record_sources(record)]
            warped, mask = warp_stored_maps(record, maps, layer_spec.shape)  # type: ignore[arg-type]
            if not mask.any():
                continue
            plain = maps[0].map_Chw
            covered[layer].append(float(mask.mean()))
            for way, target, live in (
                ("plain", plain, full[layer]),
                ("warp (geometry)", warped, geometric[layer]),
                ("warp", warped, full[layer]),
            ):
                figures[layer][way].append(_compare(target, live, mask))
    if manifest.view_spec:
        _measure_views(dataset, manifest, teacher, samples, seed, figures)
    layers = [
        LayerFidelity(
            layer,
            len(covered[layer]),
            float(np.mean(covered[layer])) if covered[layer] else 0.0,
            {way: _summary(pairs) for way, pairs in figures[layer].items()},
        )
        for layer in manifest.layers
    ]
    return FidelityReport(
        dataset, manifest.teacher, manifest.teacher_weights, manifest.input_size, student_size, layers
    )


def _summary(pairs: list[tuple[float, float]]) -> WayFidelity:
    if not pairs:
        return WayFidelity(float("nan"), float("nan"), [])
    cosines, errors = zip(*pairs, strict=True)
    return WayFidelity(float(np.mean(cosines)), float(np.mean(errors)), [round(c, 6) for c in cosines])


def write_fidelity(report: FidelityReport) -> str:
    """Writes the report next to its store; returns the URI."""
    uri = storage.join(report.dataset, FIDELITY_FILE)
    storage.write_text_atomic(uri, json.dumps(asdict(report), indent=2))
    return uri


@dataclass(frozen=True)
class _PoolRow:
    image: np.ndarray
    row: dict[str, np.ndarray]
    mirrored: bool

    def stored_map(self, layer: str, codec: str) -> StoredMap:
        return StoredMap(float_map(self.row, layer, codec), self.image.shape[:2], self.mirrored)


def _pool(dataset: str, manifest: Manifest, size: int, seed: int) -> dict[str, _PoolRow]:
    """Rows of ``size`` images of the store, from its parts in a seeded random order (each image's
    first row met, whatever its view), decoded and checked."""
    picked: dict[str, _PoolRow] = {}
    parts = list_parts(dataset)
    random.Random(seed).shuffle(parts)
    for part in parts:
        table = read_part(part)
        batch = {name: np.array(table.column(name).to_pylist(), dtype=object) for name in table.column_names}
        for row in range(table.num_rows):
            image_id = str(batch["image_id"][row])
            if image_id in picked or str(_column(batch, VIEW_RECORD_COLUMN, row)):
                continue  # another view of the same image; or an augmented canvas, not the image
            stored = decode_row(batch, row, manifest, dataset)
            image = read_image(str(batch["image_uri"][row]))
            mirrored = is_flipped(int(batch["aug_seed"][row]), manifest.augment)
            picked[image_id] = _PoolRow(image, stored, mirrored)
            if len(picked) == size:
                return picked
    return picked


def _measure_views(
    dataset: str, manifest: Manifest, teacher: torch.nn.Module, samples: int, seed: int, figures: dict
) -> None:
    """Adds the ``view`` way: up to ``samples`` stored augmented views against the live teacher on
    their replayed canvases, every cell."""
    spec = yolov8_spec(manifest.view_spec["recipe"], 0)
    parts = list_parts(dataset)
    random.Random(seed).shuffle(parts)
    measured = 0
    for part in parts:
        table = read_part(part)
        batch = {name: np.array(table.column(name).to_pylist(), dtype=object) for name in table.column_names}
        for row in range(table.num_rows):
            if measured == samples:
                return
            record = str(_column(batch, VIEW_RECORD_COLUMN, row))
            if not record:
                continue
            image_id = str(batch["image_id"][row])
            canvas = view_canvas(
                record, str(batch[VIEW_SOURCES_COLUMN][row]), image_id, manifest.input_size, spec
            )
            live = _live(teacher, canvas.transpose(1, 2, 0))
            stored = decode_row(batch, row, manifest, dataset)
            for layer, layer_spec in manifest.layers.items():
                everywhere = np.ones(layer_spec.shape[1:], bool)
                figures[layer]["view"].append(
                    _compare(float_map(stored, layer, manifest.codec), live[layer], everywhere)
                )
            measured += 1


def _column(batch: dict, name: str, row: int) -> object:
    values = batch.get(name)
    return "" if values is None else values[row]


def _geometry_only(record: AugmentRecord) -> AugmentRecord:
    return replace(record, blur=0, median_blur=0, gray=False, equalize=False, hsv_gains=(1.0, 1.0, 1.0))


@torch.no_grad()
def _live(teacher: torch.nn.Module, canvas_HWC: np.ndarray) -> dict[str, np.ndarray]:
    images = normalize(torch.from_numpy(np.ascontiguousarray(canvas_HWC.transpose(2, 0, 1)))[None])
    return {layer: value[0].float().numpy() for layer, value in teacher(images).items()}


def _compare(target_Chw: np.ndarray, live_Chw: np.ndarray, mask_hw: np.ndarray) -> tuple[float, float]:
    """Mean per-cell cosine and relative error over the cells of ``mask``."""
    target, live = target_Chw[:, mask_hw].astype(np.float64), live_Chw[:, mask_hw].astype(np.float64)
    norms = np.linalg.norm(target, axis=0) * np.linalg.norm(live, axis=0)
    cosine = float(np.mean((target * live).sum(axis=0) / np.maximum(norms, 1e-12)))
    relative = float(np.linalg.norm(target - live) / max(np.linalg.norm(live), 1e-12))
    return cosine, relative
