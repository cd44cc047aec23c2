"""``vfmkd verify``: is a feature store complete, intact, and what its teacher really outputs?

Three checks, after EdgeSAM's check mode: the manifest against the parts (row count, per-row shape
and dtype, duplicate ids); with ``check_all`` (``vfmkd verify --all``) every row of every part through
``reader.decode_row`` (its ``feat.L.crc32`` checksum, finite values, shape and dtype) without building
the teacher; then the live teacher re-run on a sample of stored images (their augmentation replayed
from ``aug_seed``), each sampled row checked the same way first, and compared with the decoded store
values. A non-finite (NaN/inf) error or cosine is a failure, never a pass.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from vfmkd_ray.data.augment.recipe import yolov8_spec
from vfmkd_ray.data.image_loader import view_canvas
from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.images import BadImageError
from vfmkd_ray.data.samples import load_letterboxed
from vfmkd_ray.data.views import VIEW_RECORD_COLUMN, VIEW_SOURCES_COLUMN
from vfmkd_ray.models.teachers.build import build_teacher
from vfmkd_ray.models.teachers.config import TeacherConfig
from vfmkd_ray.storage import StorageError
from vfmkd_ray.store import codecs
from vfmkd_ray.store.codec_report import flat_cosine
from vfmkd_ray.store.index import read_index
from vfmkd_ray.store.index_rows import VIEW_COLUMN, part_file
from vfmkd_ray.store.manifest import Manifest, read_manifest
from vfmkd_ray.store.parts import duplicate_ids, list_parts, read_part, read_part_schema
from vfmkd_ray.store.reader import FeatureStoreError, decode_row
from vfmkd_ray.store.schema import (
    FIRST_CHECKSUM_VERSION,
    crc_column,
    dtype_column,
    feature_column,
    scale_column,
    shape_column,
)

RANDOM_PREFIX = "random(seed="
FEATURE_PREFIX = "feat."  # every column of a layer: feat.L, feat.L.shape, ...


@dataclass
class VerifyReport:
    dataset: str
    rows: int
    parts: int
    checksums: bool = True  # the store's schema version has row checksums
    rows_checked: int = 0  # rows through the row checks: checksum, finite values, shape, dtype
    sampled: int = 0
    mean_abs_error: float = 0.0
    max_abs_error: float = 0.0
    mean_cosine: float = 1.0
    min_cosine: float = 1.0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def add_problem(self, problem: str) -> None:
        if problem not in self.problems:  # --all and the sample may find the same bad row
            self.problems.append(problem)


def verify_store(
    dataset: str,
    sample: int,
    weights: str | None = None,
    max_abs_error: float = 0.05,
    min_cosine: float = 0.999,
    seed: int = 0,
    check_all: bool = False,
) -> VerifyReport:
    """Checks ``dataset`` (``<root>/<teacher>/<input_size>``); problems are listed in the report.

    Args:
        sample: stored images to re-run the teacher on (0: no teacher is built).
        check_all: run the row checks over every row of every part.
    """
    manifest = read_manifest(dataset)
    if manifest is None:
        raise FeatureStoreError(f"no feature store manifest at {dataset}")
    parts = list_parts(dataset)
    report = VerifyReport(
        dataset=dataset, rows=0, parts=len(parts), checksums=manifest.schema_version >= FIRST_CHECKSUM_VERSION
    )
    tables = {}
    for part in parts:
        try:
            missing, foreign = foreign_columns(manifest, read_part_schema(part).names)
            if missing or foreign:
                report.add_problem(_schema_problem(manifest, part, missing, foreign))
            if missing:
                continue  # not readable as a part of this store: the structure checks count its rows missing
            columns = ["image_id", "image_uri", "aug_seed", *_shape_columns(manifest)]
            tables[part] = read_part(part, columns + ([VIEW_COLUMN] if manifest.schema_version >= 3 else []))
        except (StorageError, FeatureStoreError) as err:
            report.add_problem(_unreadable(part, err))
    report.rows = sum(t.num_rows for t in tables.values())
    for problem in _structure_problems(manifest, tables, len(parts)):
        report.add_problem(problem)
    for problem in _index_problems(dataset, manifest, tables):
        report.add_problem(problem)
    if check_all:
        for part in tables:
            report.rows_checked += _check_rows(manifest, dataset, part, report)
    ids = [(part, i) for part, table in tables.items() for i in range(table.num_rows)]
    picked = random.Random(seed).sample(ids, min(sample, len(ids)))
    if picked:
        num_checked = _compare_with_teacher(manifest, weights, picked, report)
        if not check_all:
            report.rows_checked = num_checked
        for problem in threshold_problems(report, max_abs_error, min_cosine):
            report.add_problem(problem)
    return report


def threshold_problems(report: VerifyReport, max_abs_error: float, min_cosine: float) -> list[str]:
    """The teacher comparison against its thresholds; NaN/inf fails (``nan > x`` would be False)."""
    if not report.sampled:
        return []
    figures = (report.mean_abs_error, report.max_abs_error, report.mean_cosine, report.min_cosine)
    if not all(math.isfinite(f) for f in figures):
        return [
            f"teacher comparison on {report.sampled} images is not finite (abs error max "
            f"{report.max_abs_error:.4g}, cosine min {report.min_cosine:.6f}): the stored or the live "
            "features hold NaN/inf"
        ]
    problems = []
    if not report.max_abs_error <= max_abs_error:
        problems.append(f"max abs error {report.max_abs_error:.4g} > {max_abs_error}")
    if not report.min_cosine >= min_cosine:
        problems.append(f"min cosine {report.min_cosine:.6f} < {min_cosine}")
    return problems


def foreign_columns(manifest: Manifest, names: list[str]) -> tuple[list[str], list[str]]:
    """A part's columns against the manifest's: those its layers need that the part lacks, and the
    part's feature columns of layers the manifest does not have (a part of another store, teacher
    or layer selection copied in)."""
    needed = ["image_id", "image_uri", "aug_seed", *([VIEW_COLUMN] if manifest.schema_version >= 3 else [])]
    known = set()
    for layer in manifest.layers:
        columns = [feature_column(layer), shape_column(layer), dtype_column(layer)]
        if manifest.schema_version >= FIRST_CHECKSUM_VERSION:
            columns.append(crc_column(layer))
        if manifest.codec == "int8":  # its per-channel scales
            columns.append(scale_column(layer))
        needed += columns
        known |= {*columns, scale_column(layer), crc_column(layer)}
    missing = [c for c in needed if c not in names]
    return missing, [c for c in names if c.startswith(FEATURE_PREFIX) and c not in known]


def _schema_problem(manifest: Manifest, part: str, missing: list[str], foreign: list[str]) -> str:
    layers = list(manifest.layers)
    others = sorted({_layer_of(column) for column in foreign})
    if not missing:
        return f"part {part} holds layers {others} besides the manifest's {layers} (a part of another store?)"
    extra = f"; it holds layers {others}" if foreign else ""
    return (
        f"part {part} lacks columns the manifest's layers {layers} need: {missing}{extra} (a part of "
        "another store?); its rows are not checked"
    )


def _layer_of(column: str) -> str:
    name = column[len(FEATURE_PREFIX) :]
    for suffix in (".shape", ".dtype", ".scale", ".crc32"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _row_keys(table) -> list[str]:
    """``image_id:view`` per row (view 0 for parts without the column)."""
    ids = table.column("image_id").to_pylist()
    views = table.column(VIEW_COLUMN).to_pylist() if VIEW_COLUMN in table.column_names else [0] * len(ids)
    return [f"{i}:{v}" for i, v in zip(ids, views, strict=True)]


def _index_problems(dataset: str, manifest: Manifest, tables: dict) -> list[str]:
    """The store index against the parts' own rows (a store made before the index has none)."""
    try:
        index = read_index(dataset, manifest.index_sha256)
    except FeatureStoreError as err:
        return [str(err)]
    if index is None:
        return []
    indexed = {
        (part, f"{i}:{v}")
        for part, i, v in zip(
            *(index.column(c).to_pylist() for c in ("part", "image_id", VIEW_COLUMN)), strict=True
        )
    }
    stored = {(part_file(part), key) for part, table in tables.items() for key in _row_keys(table)}
    if indexed == stored:
        return []
    return [
        f"the index lists {len(indexed - stored)} rows the parts do not hold and lacks "
        f"{len(stored - indexed)} they hold: re-run `vfmkd precompute` with this store's config to rebuild it"
    ]


def _structure_problems(manifest: Manifest, tables: dict, num_parts: int) -> list[str]:
    problems = []
    keys = [key for table in tables.values() for key in _row_keys(table)]
    if len(keys) != manifest.row_count:
        problems.append(f"parts hold {len(keys)} rows, the manifest says {manifest.row_count}")
    if num_parts != manifest.num_parts:
        problems.append(f"{num_parts} parts, the manifest says {manifest.num_parts}")
    if dupes := duplicate_ids(keys):
        problems.append(f"{len(dupes)} duplicate (image id:view) rows, e.g. {dupes[:5]}")
    dtype = codecs.CODEC_DTYPES[manifest.codec]
    for part, table in tables.items():
        for layer, spec in manifest.layers.items():
            shapes = table.column(shape_column(layer)).to_pylist()
            dtypes = table.column(dtype_column(layer)).to_pylist()
            for image_id, shape, row_dtype in zip(
                table.column("image_id").to_pylist(), shapes, dtypes, strict=True
            ):
                if tuple(shape) != spec.shape or row_dtype != dtype:
                    problems.append(
                        f"image {image_id} layer {layer} in {part}: shape {tuple(shape)} dtype {row_dtype}, "
                        f"manifest says {spec.shape} {dtype}"
                    )
    return problems


def _check_rows(manifest: Manifest, dataset: str, part: str, report: VerifyReport) -> int:
    """Every row of ``part`` through ``decode_row``; its problems go to ``report``. Returns the rows."""
    try:
        table = read_part(part)
    except (StorageError, FeatureStoreError) as err:
        report.add_problem(_unreadable(part, err))
        return 0
    batch = {name: table.column(name).to_pylist() for name in table.column_names}
    for row in range(table.num_rows):
        if problem := _row_problem(batch, row, manifest, dataset, part):
            report.add_problem(problem)
    return table.num_rows


def _unreadable(part: str, err: Exception) -> str:
    """One printable line: decoder messages about corrupt bytes may quote those bytes."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(err)).split())
    return f"part {part} cannot be read: {text}"


def _row_problem(batch: dict, row: int, manifest: Manifest, dataset: str, part: str) -> str | None:
    try:
        decode_row(batch, row, manifest, dataset)
    except FeatureStoreError as err:
        return f"part {part}: {err}"
    return None


def _compare_with_teacher(manifest: Manifest, weights: str | None, picked: list, report: VerifyReport) -> int:
    """Fills the report's error and cosine figures; returns the rows it ran the row checks on."""
    teacher = build_teacher(teacher_config(manifest, weights))
    errors, cosines, num_checked = [], [], 0
    by_part: dict[str, list[int]] = {}
    for part, index in picked:
        by_part.setdefault(part, []).append(index)
    for part, indices in by_part.items():
        try:
            rows = read_part(part).take(indices).to_pylist()
        except StorageError as err:
            report.add_problem(_unreadable(part, err))
            continue
        num_checked += len(rows)
        for row in rows:
            if problem := _row_problem({k: [v] for k, v in row.items()}, 0, manifest, report.dataset, part):
                report.add_problem(problem)  # a corrupt or non-finite row: nothing to compare
                continue
            try:
                figures = _compare_row(teacher, manifest, row)
            except BadImageError as err:  # an image the row was made of (a view's partner) is unreadable
                report.add_problem(f"part {part}: image {row['image_id']}: {err}")
                continue
            for error, cosine in figures:
                errors.append(error)
                cosines.append(cosine)
            report.sampled += 1
    if errors:
        report.mean_abs_error = float(np.mean([e.mean() for e in errors]))
        report.max_abs_error = float(np.max([e.max() for e in errors]))  # np: NaN propagates
        report.mean_cosine = float(np.mean(cosines))
        report.min_cosine = float(np.min(cosines))
    return num_checked


def _compare_row(teacher: torch.nn.Module, manifest: Manifest, row: dict) -> list[tuple[np.ndarray, float]]:
    """Per layer: the absolute error and cosine of the stored row against the live teacher."""
    if row.get(VIEW_RECORD_COLUMN):  # an augmented view: its record replayed (data.views)
        spec = yolov8_spec(manifest.view_spec["recipe"], 0) if manifest.view_spec else None
        if spec is None:
            raise FeatureStoreError(
                f"a row of image {row['image_id']} holds a view record, the manifest no view_spec"
            )
        canvas = view_canvas(
            row[VIEW_RECORD_COLUMN], row[VIEW_SOURCES_COLUMN], row["image_id"], manifest.input_size, spec
        )
    else:
        canvas, _ = load_letterboxed(row["image_uri"], manifest.input_size, row["aug_seed"], manifest.augment)
    with torch.no_grad():
        live = teacher(normalize(torch.from_numpy(canvas)[None]))
    figures = []
    for layer, spec in manifest.layers.items():
        scale = np.frombuffer(row[scale_column(layer)], np.float32) if manifest.codec == "int8" else None
        stored = codecs.decode(row[feature_column(layer)], spec.shape, manifest.codec, scale)
        expected = live[layer][0].numpy()
        figures.append((np.abs(stored - expected), flat_cosine(stored, expected)))
    return figures


def teacher_config(manifest: Manifest, weights: str | None) -> TeacherConfig:
    """The teacher that made the store: the recorded random seed, or ``weights`` with its sha256."""
    if manifest.teacher_weights.startswith(RANDOM_PREFIX):
        seed = int(manifest.teacher_weights[len(RANDOM_PREFIX) : -1])
        return TeacherConfig(
            name=manifest.teacher,
            weights="random",
            random_seed=seed,
            input_size=manifest.input_size,
            layers=list(manifest.layers),
        )
    if weights is None:
        raise ValueError(
            f"the store was made with teacher weights {manifest.teacher_weights}: "
            "pass --weights URI of that file"
        )
    sha256 = manifest.teacher_weights.removeprefix("sha256:")
    return TeacherConfig(
        name=manifest.teacher,
        weights=weights,
        sha256=sha256,
        input_size=manifest.input_size,
        layers=list(manifest.layers),
    )


def _shape_columns(manifest: Manifest) -> list[str]:
    return [column for layer in manifest.layers for column in (shape_column(layer), dtype_column(layer))]
