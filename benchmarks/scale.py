"""How the store's driver-side work and an epoch's reads grow with the store: 1k, 10k and 100k rows.

A tiny-feature store (one 16x4x4 fp16 layer, 64 rows per part, written through the real
``PartWriter`` and ``finalize_store``, so with its index and manifest) is measured at each size:

- ``plan``: load the index and plan the train and validation passes (``train.read_plan``);
- ``resume scan``: what a precompute re-run does to find what is stored (index + rows to do), and
  beside it the scan of every part's ``image_id`` column that it replaced;
- ``row index``: another teacher's ``StoreRowIndex`` built from the index;
- ``epoch pass``: the read stage (``store.ray_source.read_parts``) over both passes' planned row
  groups plus the feature decode and checks (``store.reader.decode_features``), in this process,
  without images or Ray: the bytes side of an epoch, with bytes read and bytes used.

Each stage: wall seconds and how much it raised the process's peak resident memory (0 when an
earlier, larger stage had already raised it further; sizes run smallest first), and a growth
exponent (least squares of log time on log rows; 1.0 is linear).
``python -m benchmarks.scale [--sizes 1000,10000,100000]``; ``make bench`` runs it as ``scale``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.figures import Figure, argument_parser
from vfmkd_ray.data.coco import ImageRecord
from vfmkd_ray.data.pipeline import is_validation
from vfmkd_ray.store.index import build_index, load_index, read_index, write_index
from vfmkd_ray.store.manifest import LayerSpec, Manifest, StoreDataset, write_manifest
from vfmkd_ray.store.parts import PartWriter, stored_image_ids
from vfmkd_ray.store.precompute import rows_to_do
from vfmkd_ray.store.ray_source import PART_COLUMN, ROW_GROUPS_COLUMN, STORED_BYTES_COLUMN, read_parts
from vfmkd_ray.store.reader import decode_features
from vfmkd_ray.store.row_index import StoreRowIndex
from vfmkd_ray.store.schema import SCHEMA_VERSION, feature_column
from vfmkd_ray.train.read_plan import plan_reads
from vfmkd_ray.train.step_clock import peak_rss_mb

SECTION = "Store at scale (driver side and an epoch's reads)"
LAYER, SHAPE, ROWS_PER_PART, VAL_FRACTION = "embed", (16, 4, 4), 64, 0.125


def build_store(dataset: str, rows: int) -> tuple[Manifest, list[ImageRecord]]:
    """``rows`` rows in parts of ``ROWS_PER_PART``, their index and a manifest naming it."""
    rng = np.random.default_rng(0)
    records = [ImageRecord(f"img{i:07d}", f"s3://bucket/img{i:07d}.jpg", 640, 480) for i in range(rows)]
    writer = PartWriter(dataset, [LAYER], "fp16")
    for start in range(0, rows, ROWS_PER_PART):
        chunk = records[start : start + ROWS_PER_PART]
        writer(
            {
                "image_id": np.array([r.image_id for r in chunk]),
                "image_uri": np.array([r.image_uri for r in chunk]),
                "aug_seed": np.arange(start, start + len(chunk)),
                "valid_h": np.full(len(chunk), 48),
                "valid_w": np.full(len(chunk), 64),
                feature_column(LAYER): rng.standard_normal((len(chunk), *SHAPE)).astype(np.float32),
            }
        )
    index = build_index(dataset)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        teacher="synthetic",
        teacher_weights="random(seed=0)",
        input_size=64,
        layers={LAYER: LayerSpec(shape=SHAPE, stride=16)},
        codec="fp16",
        augment="none",
        row_count=index.num_rows,
        num_parts=len(pc.unique(index.column("part"))),
        dataset_fingerprint="synthetic",
        index_sha256=write_index(dataset, index),
    )
    write_manifest(dataset, manifest)
    return manifest, records


def measure(stage: Callable[[], object]) -> tuple[float, float, object]:
    """(seconds, MiB the stage raised the process's peak resident memory by, the stage's result).
    ``tracemalloc`` would count Arrow's buffers no better, and crashed here beside Arrow's threads."""
    before = peak_rss_mb()
    started = time.perf_counter()
    result = stage()
    return time.perf_counter() - started, peak_rss_mb() - before, result


def epoch_pass(store: StoreDataset, index: pa.Table, ids: dict[str, list[str]]) -> tuple[int, int, int]:
    """Both passes through the read stage and the feature decode: (rows, bytes read, bytes used)."""
    rows = read = used = 0
    for split_ids in ids.values():
        plan = plan_reads(index, store.uri, split_ids, 0)
        items = pa.table(
            {PART_COLUMN: list(plan.row_groups), ROW_GROUPS_COLUMN: list(plan.row_groups.values())}
        )
        for start in range(0, items.num_rows, 16):  # a batch of parts per call, as a read task takes
            table = read_parts(items.slice(start, 16))
            batch = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
            rows += len(decode_features(batch, store.manifest, store.uri)[feature_column(LAYER)])
            used += int(pc.sum(table.column(STORED_BYTES_COLUMN)).as_py())
        read += plan.nbytes
    return rows, read, used


def measure_size(root: str, rows: int) -> dict[str, tuple[float, float]]:
    dataset = f"{root}/synthetic/{rows}"
    started = time.perf_counter()
    manifest, records = build_store(dataset, rows)
    figures = {"build store (not a product stage)": (time.perf_counter() - started, 0.0)}
    store = StoreDataset("synthetic", dataset, manifest)
    all_ids = [r.image_id for r in records]
    split = {"train": [i for i in all_ids if not is_validation(i, VAL_FRACTION)]}
    split["val"] = [i for i in all_ids if is_validation(i, VAL_FRACTION)]

    def plan():
        index = load_index(dataset, manifest.index_sha256)
        return [plan_reads(index, dataset, ids, 0) for ids in split.values()]

    seconds, peak, _ = measure(plan)
    figures["plan"] = (seconds, peak)
    seconds, peak, todo = measure(
        lambda: rows_to_do(records, build_index(dataset, read_index(dataset, manifest.index_sha256)), 1, 0)
    )
    assert todo.num_rows == 0
    figures["resume scan"] = (seconds, peak)
    seconds, peak, _ = measure(lambda: stored_image_ids(dataset))
    figures["resume scan, old (every part's ids)"] = (seconds, peak)
    seconds, peak, _ = measure(lambda: StoreRowIndex.build(store))
    figures["row index"] = (seconds, peak)
    index = load_index(dataset, manifest.index_sha256)
    seconds, peak, (decoded, read, used) = measure(lambda: epoch_pass(store, index, split))
    assert decoded == rows
    figures["epoch pass (read + decode)"] = (seconds, peak)
    store_bytes = int(pc.sum(index.column("nbytes")).as_py())
    figures["bytes read / used"] = (read / used, 0.0)
    figures["bytes read / used, whole parts twice (before)"] = (2 * store_bytes / used, 0.0)
    return figures


def growth_exponent(sizes: list[int], seconds: list[float]) -> float:
    """The least-squares slope of log(seconds) on log(rows): 1.0 is linear."""
    xs, ys = np.log(sizes), np.log(np.maximum(seconds, 1e-9))
    return float(np.polyfit(xs, ys, 1)[0])


def table(results: dict[int, dict[str, tuple[float, float]]]) -> str:
    sizes = sorted(results)
    stages = list(results[sizes[0]])
    head = "| stage | " + " | ".join(f"{n:,} rows" for n in sizes) + " | growth exponent |"
    lines = [head, "|" + "---|" * (len(sizes) + 2)]
    for stage in stages:
        values = [results[n][stage] for n in sizes]
        if stage.startswith("bytes"):
            cells = [f"{v:.2f}" for v, _ in values]
            exponent = ""
        else:
            cells = [f"{s:.3f} s, +{m:.0f} MiB" for s, m in values]
            exponent = f"{growth_exponent(sizes, [s for s, _ in values]):.2f}" if len(sizes) > 1 else ""
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {exponent} |")
    return "\n".join(lines)


def run(root: str, argv: list[str]) -> list[Figure]:
    parser = argument_parser(__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    args, _ = parser.parse_known_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    for rows in sizes:
        results[rows] = measure_size(root, rows)
        print(f"[scale] {rows:,} rows measured", flush=True)
    print(table(results), flush=True)
    figures = []
    for stage in results[sizes[0]]:
        unit = "ratio" if stage.startswith("bytes") else "s"
        for rows in sizes:
            figures.append(Figure(SECTION, f"{stage} at {rows:,} rows", unit, [results[rows][stage][0]]))
        if unit == "s" and len(sizes) > 1:
            exponent = growth_exponent(sizes, [results[n][stage][0] for n in sizes])
            figures.append(Figure(SECTION, f"{stage}: growth exponent", "", [exponent], target="<= 1.1"))
    return figures


if __name__ == "__main__":
    from benchmarks.run_all import run_standalone

    run_standalone(run)
