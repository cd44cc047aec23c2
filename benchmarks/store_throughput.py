"""Feature-store throughput through the real Ray Data path, against a raw-bytes baseline.

For each codec and target (local disk, and the moto S3 server on 127.0.0.1):
- write: Ray Data batches of float32 features -> ``PartWriter`` (encode + Parquet + atomic write);
- read: ``read_store_rows`` (the training source) -> ``decode_features`` (shape/dtype checks,
  stored arrays) -> batches;
- raw: the same encoded feature bytes as one flat file/object, read with plain reads and
  ``np.frombuffer`` per row: the limit the store path is measured against.

    .venv/bin/python -m benchmarks.store_throughput [--rows 128] [--rows-per-part 64] [--shape 256 64 64]
        [--repeats 3]

Each figure is the median of ``--repeats`` runs with its min-max. Stored bytes are the parts' sizes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray

from benchmarks.figures import Figure, ratio
from tests.s3_server import create_bucket, moto_s3_server
from vfmkd_ray import storage
from vfmkd_ray.ray_session import ensure_ray
from vfmkd_ray.store import codecs
from vfmkd_ray.store.config import StoreConfig
from vfmkd_ray.store.manifest import LayerSpec, Manifest
from vfmkd_ray.store.parts import PartWriter, list_parts
from vfmkd_ray.store.ray_source import read_store_rows
from vfmkd_ray.store.reader import decode_features
from vfmkd_ray.store.schema import SCHEMA_VERSION, feature_column

LAYER = "image_embed"


class FeatureSource:
    """Distinct float32 rows cut from one random pool (generating fresh noise would dominate)."""

    def __init__(self, shape: tuple[int, int, int]):
        self.shape = shape
        self.pool = np.random.default_rng(0).standard_normal(int(np.prod(shape)) * 2).astype(np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = int(np.prod(self.shape))
        rows = [self.pool[(int(i) * 7919) % size :][:size].reshape(self.shape) for i in batch["id"]]
        ids = [str(i) for i in batch["id"]]
        return {
            "image_id": np.array(ids),
            "image_uri": np.array([f"mem://{i}" for i in ids]),
            "aug_seed": np.asarray(batch["id"], np.int64),
            "valid_h": np.full(len(ids), self.shape[1] * 16, np.int32),
            "valid_w": np.full(len(ids), self.shape[2] * 16, np.int32),
            feature_column(LAYER): np.stack(rows),
        }


class Decoder:
    def __init__(self, manifest: Manifest, dataset: str):
        self.manifest, self.dataset = manifest, dataset

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return decode_features(batch, self.manifest, self.dataset)


def write_store(dataset: str, rows: int, shape, codec: str, rows_per_part: int) -> float:
    ds = ray.data.range(rows, override_num_blocks=max(1, rows // rows_per_part))
    ds = ds.map_batches(FeatureSource(shape), batch_size=rows_per_part)
    ds = ds.map_batches(PartWriter(dataset, [LAYER], codec), batch_size=rows_per_part)
    started = time.perf_counter()
    written = sum(int(r) for r in ds.to_pandas()["rows"])
    assert written == rows, written
    return time.perf_counter() - started


def read_store(dataset: str, manifest: Manifest, batch_size: int) -> tuple[float, int]:
    started = time.perf_counter()
    every_row = {part: list(range(pq.ParquetFile(part).num_row_groups)) for part in list_parts(dataset)}
    ds = read_store_rows(every_row, num_cpus=1).map_batches(Decoder(manifest, dataset), batch_size=batch_size)
    count = sum(
        len(b[feature_column(LAYER)]) for b in ds.iter_batches(batch_size=batch_size, batch_format="numpy")
    )
    return time.perf_counter() - started, count


def raw_read(uri: str, row_bytes: int, shape, codec: str) -> float:
    started = time.perf_counter()
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(row_bytes):
            codecs.stored_array(chunk, shape, codec)  # np.frombuffer + reshape
    return time.perf_counter() - started


def run_one(root: str, codec: str, args) -> tuple[dict[str, list[float]], list[float]]:
    """Rows/s of each operation per repeat, and the stored bytes per row of each written store."""
    shape = tuple(args.shape)
    row_bytes = len(codecs.encode(np.zeros(shape, np.float32), codec)[0])
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,  # the current layout: the read verifies row checksums
        teacher="bench",
        teacher_weights="none",
        input_size=shape[1] * 16,
        layers={LAYER: LayerSpec(shape=shape, stride=16)},
        codec=codec,
        augment="none",
        row_count=args.rows,
        num_parts=0,
        dataset_fingerprint="bench",
    )
    times: dict[str, list[float]] = {"write": [], "read": [], "raw read": []}
    stored = []
    for repeat in range(args.repeats):
        dataset = storage.join(root, f"{codec}-{repeat}")
        times["write"].append(write_store(dataset, args.rows, shape, codec, args.rows_per_part))
        stored.append(sum(storage.size(part) for part in list_parts(dataset)) / args.rows)
        seconds, count = read_store(dataset, manifest, args.rows_per_part)
        assert count == args.rows
        times["read"].append(seconds)
        raw_uri = storage.join(root, f"raw-{codec}-{repeat}.bin")
        payload = b"".join(
            codecs.encode(FeatureSource(shape)({"id": np.array([i])})[feature_column(LAYER)][0], codec)[0]
            for i in range(args.rows)
        )
        storage.write_bytes_atomic(raw_uri, payload)
        times["raw read"].append(raw_read(raw_uri, row_bytes, shape, codec))
    return {op: [args.rows / t for t in ts] for op, ts in times.items()}, stored


SECTION = "feature store"


def run(root: str, argv: list[str]) -> list[Figure]:
    """Parses ``argv`` (the flags above) and measures every codec on every target under ``root``
    (local) and in a bucket of a moto S3 server on 127.0.0.1."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 64, 64], help="C H W (SAM at 1024 px)")
    parser.add_argument(
        "--rows-per-part",
        type=int,
        default=StoreConfig.model_fields["rows_per_part"].default,
        help="the stores' layout (store.rows_per_part)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--codecs", nargs="+", default=["fp16", "bf16", "int8"])
    parser.add_argument("--targets", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument("--gpu", action="store_true", help="accepted for run_all; the store path is CPU-only")
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    fp32_bytes = int(np.prod(shape)) * 4
    figures = [Figure(SECTION, f"fp32 tensor {shape}", "bytes/image", [fp32_bytes], "raw, uncompressed")]
    Path(root).mkdir(parents=True, exist_ok=True)
    with moto_s3_server() as endpoint:
        create_bucket(endpoint, "bench")
        ray.shutdown()  # a Ray started before the server would not pass its AWS settings to workers
        ensure_ray()  # the product's local Ray: a CPU per core, no dashboard
        roots = {"local": root, "s3": "s3://bench"}
        for target in args.targets:
            for codec in args.codecs:
                print(f"[bench] store {target} {codec}", flush=True)
                rates, stored = run_one(roots[target], codec, args)
                if target == args.targets[0]:
                    figures.append(
                        Figure(
                            SECTION,
                            f"{codec}: stored bytes",
                            "bytes/image",
                            stored,
                            "Parquet + zstd, on disk",
                        )
                    )
                    figures.append(ratio(SECTION, f"{codec}: stored bytes / fp32", stored, [fp32_bytes]))
                for op in ("write", "read", "raw read"):
                    figures.append(Figure(SECTION, f"{target} {codec}: {op}", "images/s", rates[op]))
                figures.append(
                    ratio(SECTION, f"{target} {codec}: read / raw read", rates["read"], rates["raw read"])
                )
        ray.shutdown()
    return figures


if __name__ == "__main__":
    from benchmarks.run_all import run_standalone

    run_standalone(run)
