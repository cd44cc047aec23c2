"""``vfmkd verify``: is a feature store complete, consistent, and what its teacher really outputs?

Two checks, after EdgeSAM's check mode: the manifest against the parts (row count, per-row shape and
dtype, duplicate ids), then the live teacher re-run on a sample of stored images (their augmentation
replayed from ``aug_seed``) and compared with the decoded store values.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch

from vfmkd_ray.data.image_tensors import normalize
from vfmkd_ray.data.pipeline import load_letterboxed
from vfmkd_ray.models.teachers import TeacherConfig, build_teacher
from vfmkd_ray.store import codecs
from vfmkd_ray.store.codec_report import flat_cosine
from vfmkd_ray.store.manifest import Manifest, read_manifest
from vfmkd_ray.store.parts import duplicate_ids, list_parts, read_part
from vfmkd_ray.store.reader import FeatureStoreError
from vfmkd_ray.store.schema import dtype_column, feature_column, scale_column, shape_column

RANDOM_PREFIX = "random(seed="


@dataclass
class VerifyReport:
    dataset: str
    rows: int
    parts: int
    sampled: int = 0
    mean_abs_error: float = 0.0
    max_abs_error: float = 0.0
    mean_cosine: float = 1.0
    min_cosine: float = 1.0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def verify_store(
    dataset: str,
    sample: int,
    weights: str | None = None,
    max_abs_error: float = 0.05,
    min_cosine: float = 0.999,
    seed: int = 0,
) -> VerifyReport:
    """Checks ``dataset`` (``<root>/<teacher>/<input_size>``); problems are listed in the report."""
    manifest = read_manifest(dataset)
    if manifest is None:
        raise FeatureStoreError(f"no feature store manifest at {dataset}")
    parts = list_parts(dataset)
    tables = {
        part: read_part(part, ["image_id", "image_uri", "aug_seed", *_shape_columns(manifest)])
        for part in parts
    }
    report = VerifyReport(dataset=dataset, rows=sum(t.num_rows for t in tables.values()), parts=len(parts))
    report.problems.extend(_structure_problems(manifest, tables))
    ids = [(part, i) for part, table in tables.items() for i in range(table.num_rows)]
    picked = random.Random(seed).sample(ids, min(sample, len(ids)))
    if picked:
        _compare_with_teacher(manifest, weights, picked, report)
        if report.max_abs_error > max_abs_error:
            report.problems.append(f"max abs error {report.max_abs_error:.4g} > {max_abs_error}")
        if report.min_cosine < min_cosine:
            report.problems.append(f"min cosine {report.min_cosine:.6f} < {min_cosine}")
    return report


def _structure_problems(manifest: Manifest, tables: dict) -> list[str]:
    problems = []
    ids = [i for table in tables.values() for i in table.column("image_id").to_pylist()]
    if len(ids) != manifest.row_count:
        problems.append(f"parts hold {len(ids)} rows, the manifest says {manifest.row_count}")
    if len(tables) != manifest.num_parts:
        problems.append(f"{len(tables)} parts, the manifest says {manifest.num_parts}")
    if dupes := duplicate_ids(ids):
        problems.append(f"{len(dupes)} duplicate image ids, e.g. {dupes[:5]}")
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


def _compare_with_teacher(
    manifest: Manifest, weights: str | None, picked: list, report: VerifyReport
) -> None:
    teacher = build_teacher(_teacher_config(manifest, weights))
    errors, cosines = [], []
    by_part: dict[str, list[int]] = {}
    for part, index in picked:
        by_part.setdefault(part, []).append(index)
    for part, indices in by_part.items():
        rows = read_part(part).take(indices).to_pylist()
        for row in rows:
            canvas, _ = load_letterboxed(
                row["image_uri"], manifest.input_size, row["aug_seed"], manifest.augment
            )
            with torch.no_grad():
                live = teacher(normalize(torch.from_numpy(canvas)[None]))
            for layer, spec in manifest.layers.items():
                scale = (
                    np.frombuffer(row[scale_column(layer)], np.float32) if manifest.codec == "int8" else None
                )
                stored = codecs.decode(row[feature_column(layer)], spec.shape, manifest.codec, scale)
                expected = live[layer][0].numpy()
                errors.append(np.abs(stored - expected))
                cosines.append(flat_cosine(stored, expected))
    report.sampled = len(picked)
    report.mean_abs_error = float(np.mean([e.mean() for e in errors]))
    report.max_abs_error = float(max(e.max() for e in errors))
    report.mean_cosine = float(np.mean(cosines))
    report.min_cosine = float(min(cosines))


def _teacher_config(manifest: Manifest, weights: str | None) -> TeacherConfig:
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
