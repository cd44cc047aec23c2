"""The data plane's CPU cost per training sample, stage by stage, and the cores a GPU needs.

Each workload is a real store (``PartWriter``: Parquet + zstd, checksums, in the product's default
layout of ``store.rows_per_part`` rows a part) of one teacher layer, with the 640 x 480 JPEGs
(quality 90, boxes) its rows point at:

- SAM ViT at 1024 px (``image_embed`` 256 x 64 x 64) in fp16 and int8;
- DINOv3-B at 640 px (``patch_tokens`` 768 x 40 x 40) in fp16.

Its rows go through the decode stage's work stage by stage on one thread (torch and OpenCV with one
thread, timed by ``stage_timer``: CPU milliseconds per sample and the bytes each stage moves), in
the order ``data.pipeline.TrainSampleDecoder`` and ``training.batch_feed`` do it for a mosaic epoch of
the YOLOv8-s recipe at 640 px with ``under_augmentation: warp``: row-group read (opening the part as
``store.parts`` does: a memory map locally, and its footer), Parquet decode (the column chunks, from
the page cache through the map, decoded), Arrow to NumPy (``data.arrow_columns``), checksum,
finiteness, image fetch, image decode, augmentation (mosaic + affine + Albu + HSV + flip,
``augment.replay``), target building, the feature warp (each sample's stored maps carried into its
canvas, ``data.warped_features``), collation (``np.stack``, ``torch.from_numpy``), host-to-device
(``--gpu``: from pinned memory to ``cuda:0``; without a GPU a copy into a fresh tensor stands in)
and the feature decode to float32 (on the GPU in training; ``--gpu`` adds nvJPEG's batched decode of
the same JPEGs). ``resize and letterbox`` is what a plain (close-mosaic) epoch does instead of the
augmentation: shown, not in the mosaic epoch's total. A store of views (``under_augmentation:
views``) has no warp; it decodes the view's three partners per sample instead (three more image
fetches and decodes).

Beside the stages:
- ``check: stages / decode stage``: the same rows through the product's own read task
  (``store.ray_source.read_part``) and ``TrainSampleDecoder``, against the stages that path covers:
  near 1.0 when the stages are the product's work;
- the limits: the same feature bytes read raw (one flat file, ``np.frombuffer`` per row) against
  the store read (read, Parquet decode, Arrow to NumPy, checksum, finiteness), and the fastest JPEG
  decoder here (``torchvision.io.decode_jpeg`` or PIL's bare decode) against the image decode stage;
- ``cores per 1,000 images/s``: the mosaic epoch's CPU milliseconds per sample (one core's), a
  second of 1,000 samples; and the two stages that dominate it;
- the peer (``--peer``): images/s of the decode stage over the SAM fp16 store through Ray Data as
  ``training.streams`` builds it and a Train worker reads it (``read_store_rows`` ->
  ``TrainSampleDecoder``, split by Ray Train's ``DataConfig`` -> ``iter_torch_batches``) against a
  ``torch.utils.data.DataLoader`` with a worker per core over the same parts and decoder, at equal
  cores; the later passes' rate, start included, and their first batch's wait.

    .venv/bin/python -m benchmarks.data_plane [--rows 64] [--rows-per-part 64] [--repeats 3] [--peer-rows 768]
        [--peer-passes 5] [--no-peer]

``make bench`` runs it as ``data_plane``.
"""

from __future__ import annotations

import io
import json
import os
import statistics
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from benchmarks.data_plane_workloads import (
    ROWS_PER_PART,
    WORKLOADS,
    Workload,
    part_annotations,
    write_images,
    write_store,
)
from benchmarks.figures import Figure, argument_parser
from benchmarks.stage_timer import StageTimer, cores_per_thousand
from vfmkd_ray import storage
from vfmkd_ray.data.arrow_columns import numpy_columns
from vfmkd_ray.data.augment.block import BlockAugmentation, decoded_sample
from vfmkd_ray.data.augment.replay import replay
from vfmkd_ray.data.coco import ImageAnnotations
from vfmkd_ray.data.feature_keys import feature_key
from vfmkd_ray.data.images import decode_image, letterbox
from vfmkd_ray.data.pipeline import SampleSpec, TrainSampleDecoder
from vfmkd_ray.data.targets import padded_targets
from vfmkd_ray.data.warped_features import warp_sources, warped_features
from vfmkd_ray.store import codecs
from vfmkd_ray.store.manifest import Manifest, StoreDataset
from vfmkd_ray.store.parts import list_parts
from vfmkd_ray.store.ray_source import read_part
from vfmkd_ray.store.schema import crc_column, feature_column, row_checksum, scale_column

SECTION = "data plane"
STUDENT_SIZE, BATCH, MAX_OBJECTS = 640, 8, 100
READ, PARQUET, TO_NUMPY, CHECKSUM, FINITE = (
    "row-group read",
    "Parquet decode",
    "Arrow to NumPy",
    "checksum",
    "finiteness",
)
FETCH, DECODE, LETTERBOX, AUGMENT, TARGETS = (
    "image fetch",
    "image decode",
    "resize and letterbox",
    "augmentation",
    "target building",
)
WARP, COLLATE, TO_DEVICE, TO_FLOAT = (
    "feature warp",
    "collation",
    "host-to-device",
    "feature decode to float",
)
ALIAS = "bench"
STORE_READ = [READ, PARQUET, TO_NUMPY, CHECKSUM, FINITE]
DECODE_STAGE = [*STORE_READ, FETCH, DECODE, AUGMENT, TARGETS, WARP]  # what TrainSampleDecoder does
NOT_IN_MOSAIC_EPOCH = {LETTERBOX}


def pipeline() -> BlockAugmentation:
    return BlockAugmentation.yolov8("s", 0, seed=0, epochs=100, size=STUDENT_SIZE, max_objects=MAX_OBJECTS)


def staged_pass(
    timer: StageTimer,
    store: StoreDataset,
    workload: Workload,
    images: dict[str, tuple[str, ImageAnnotations]],
    keep: list[dict[str, np.ndarray]] | None = None,
    device: str = "cpu",
) -> int:
    """Every row of ``store`` through the stages, a part (a block of the stream) at a time;
    returns the samples made (and appends them to ``keep``, when given)."""
    augmentation, layer, codec = pipeline(), workload.layer, workload.codec
    column, scale_name = feature_column(layer), scale_column(layer)
    samples = 0
    for part in list_parts(store.uri):
        with ExitStack() as opened:
            with timer.stage(READ):
                source = opened.enter_context(storage.open_random_access(part))
                parquet = pq.ParquetFile(source)
            timer.add_bytes(READ, storage.size(part))
            with timer.stage(PARQUET):
                table = parquet.read_row_groups(list(range(parquet.num_row_groups)))
        timer.add_bytes(PARQUET, table.nbytes)
        with timer.stage(TO_NUMPY):
            batch = numpy_columns(table)
        decoded, stored = {}, {}
        for row, image_id in enumerate(str(i) for i in batch["image_id"]):
            features, scale = batch[column][row], batch[scale_name][row] if scale_name in batch else b""
            with timer.stage(CHECKSUM, len(features) + len(scale or b"")):
                assert row_checksum(features, scale or b"") == int(batch[crc_column(layer)][row])
            with timer.stage(FINITE):
                array = codecs.stored_array(features, workload.shape, codec)
                scales = np.frombuffer(scale, np.float32) if scale else None
                assert codecs.count_non_finite(array, codec, scales) == 0
            stored[image_id] = {feature_key(ALIAS, column): array} | (
                {feature_key(ALIAS, scale_name): scales} if scales is not None else {}
            )
            uri, annotations = images[image_id]
            with timer.stage(FETCH):
                encoded = storage.read_bytes(uri)
            timer.add_bytes(FETCH, len(encoded))
            with timer.stage(DECODE):
                image = decode_image(encoded, uri)
                decoded[image_id] = decoded_sample(image, annotations)
            timer.add_bytes(DECODE, image.nbytes)
            with timer.stage(LETTERBOX):
                letterbox(image, STUDENT_SIZE)
        ids = list(decoded)
        made = []
        with timer.stage(AUGMENT):
            records = augmentation.records(0, ids)
        with timer.stage(WARP):
            sources = warp_sources([store], dict.fromkeys(ids, 0), stored)
        image_hw = {image_id: sample.image.shape[:2] for image_id, sample in decoded.items()}
        for record in records:
            with timer.stage(AUGMENT):
                out = replay(record, decoded.__getitem__, augmentation.spec)
                canvas = np.ascontiguousarray(out.image.transpose(2, 0, 1))
            with timer.stage(TARGETS):
                targets = padded_targets(out.boxes, out.labels, MAX_OBJECTS)
            with timer.stage(WARP):
                features = warped_features(record, image_hw, sources)
            made.append({"image": canvas, **targets, **features})
        if keep is not None:
            keep += made
        for start in range(0, len(made), BATCH):
            collate(timer, made[start : start + BATCH], workload, device)
        samples += len(made)
    return samples


def collate(
    timer: StageTimer, samples: list[dict[str, np.ndarray]], workload: Workload, device: str = "cpu"
) -> None:
    """Stacks, moves and decodes one batch; on ``cuda`` the copy from pinned memory and the decode
    run on the GPU (the stages wait for them: CPU time spent waiting is not counted)."""
    with timer.stage(COLLATE):
        tensors = {name: torch.from_numpy(np.stack([s[name] for s in samples])) for name in samples[0]}
    with timer.stage(TO_DEVICE, sum(t.nbytes for t in tensors.values())):
        moved = {name: to_device(tensor, device) for name, tensor in tensors.items()}
    with timer.stage(TO_FLOAT):
        scale = moved.get(feature_key(ALIAS, scale_column(workload.layer)))
        codecs.to_float32(moved[feature_key(ALIAS, feature_column(workload.layer))], workload.codec, scale)
        if device == "cuda":
            torch.cuda.synchronize()


def to_device(tensor: torch.Tensor, device: str) -> torch.Tensor:
    """A host-to-device copy from pinned memory (as Ray's prefetch does on CUDA workers); without a
    GPU, a copy into a fresh tensor stands in."""
    if device == "cuda":
        moved = tensor.pin_memory().to(device, non_blocking=True)
        torch.cuda.synchronize()
        return moved
    return tensor.clone()


def product_batches(dataset: str, images: dict[str, tuple[str, ImageAnnotations]]) -> Iterator[pa.Table]:
    """Each part of ``dataset`` as the product's read task gives it (with its rows' annotations):
    the Arrow block the decoder takes. The annotations are gathered first, as the driver does,
    outside the reads."""
    texts = {part: json.dumps(columns) for part, columns in part_annotations(dataset, images).items()}
    return (read_part(part, list(range(pq.ParquetFile(part).num_row_groups)), texts[part]) for part in texts)


def decode_stage_pass(timer: StageTimer, dataset: str, manifest: Manifest, images) -> int:
    """The same rows through the product's read task and decoder (a mosaic epoch), timed whole."""
    decoder = TrainSampleDecoder(
        StoreDataset(ALIAS, dataset, manifest),
        SampleSpec(STUDENT_SIZE, "none", MAX_OBJECTS, pipeline=pipeline()),
    )
    samples = 0
    batches = product_batches(dataset, images)
    while True:
        with timer.stage("decode stage"):
            batch = next(batches, None)
            if batch is None:
                break
            for out in decoder(batch):
                samples += len(out["image"])
    return samples


def raw_read_ms(root: str, dataset: str, workload: Workload, repeats: int) -> list[float]:
    """CPU ms per row, per repeat, to read the same feature bytes from one flat file (written
    once) with ``np.frombuffer``."""
    flat = f"{root}/raw-{workload.codec}-{workload.layer}.bin"
    rows = []
    for part in list_parts(dataset):
        rows += pq.read_table(part, columns=[feature_column(workload.layer)]).column(0).to_pylist()
    Path(flat).write_bytes(b"".join(rows))
    times = []
    for _ in range(repeats):
        timer = StageTimer()
        with timer.stage("raw"), open(flat, "rb") as handle:
            while chunk := handle.read(len(rows[0])):
                codecs.stored_array(chunk, workload.shape, workload.codec)
        times.append(timer.total_cpu_ms() / len(rows))
    return times


def fastest_decode_ms(images: dict[str, tuple[str, ImageAnnotations]]) -> float:
    """CPU ms per image of the least work a decoder here can do on the same files: the faster of
    ``torchvision.io.decode_jpeg`` and PIL's bare decode (no EXIF, no checks), both libjpeg-turbo."""
    from torchvision.io import decode_jpeg

    encoded = [Path(uri).read_bytes() for uri, _ in images.values()]
    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in encoded]
    timer = StageTimer()
    with timer.stage("decode_jpeg"):
        for tensor in tensors:
            decode_jpeg(tensor)
    with timer.stage("PIL"):
        for data in encoded:
            with Image.open(io.BytesIO(data)) as image:
                np.asarray(image)
    return min(timer.cpu_ms_per_sample(len(encoded)).values())


def nvjpeg_decode_ms(images: dict[str, tuple[str, ImageAnnotations]]) -> float:
    """Wall ms per image of torchvision's nvJPEG decode of the same files, one batched call."""
    from torchvision.io import decode_jpeg

    tensors = [
        torch.frombuffer(bytearray(Path(uri).read_bytes()), dtype=torch.uint8) for uri, _ in images.values()
    ]
    decode_jpeg(tensors, device="cuda")  # warm-up: the decoder's state
    torch.cuda.synchronize()
    timer = StageTimer()
    with timer.stage("nvjpeg"):
        decode_jpeg(tensors, device="cuda")
        torch.cuda.synchronize()
    return timer.stages["nvjpeg"].wall_ns / 1e6 / len(tensors)


def measure_workload(
    root: str,
    workload: Workload,
    images,
    repeats: int,
    device: str = "cpu",
    rows_per_part: int = ROWS_PER_PART,
) -> list[Figure]:
    dataset = f"{root}/{workload.codec}-{workload.layer}"
    manifest = write_store(dataset, workload, images, rows_per_part)
    store = StoreDataset(ALIAS, dataset, manifest)
    staged_pass(StageTimer(), store, workload, images, device=device)  # warm-up: imports, pools, cache
    decode_stage_pass(StageTimer(), dataset, manifest, images)
    staged, whole = [], []
    for _ in range(repeats):
        timer = StageTimer()
        samples = staged_pass(timer, store, workload, images, device=device)
        staged.append((timer, samples))
        check = StageTimer()
        whole.append(check.total_cpu_ms() if decode_stage_pass(check, dataset, manifest, images) else 0.0)
    name = workload.name
    figures = []
    stages = list(staged[0][0].stages)
    per_sample = {s: [t.cpu_ms_per_sample(n)[s] for t, n in staged] for s in stages}
    nbytes = staged[0][0].bytes_per_sample(staged[0][1])
    for stage in stages:
        note = f"{nbytes[stage] / 1e6:.2f} MB/sample" if nbytes[stage] else ""
        if stage in NOT_IN_MOSAIC_EPOCH:
            note = "plain epochs, instead of the augmentation; not in the total" + (
                f"; {note}" if note else ""
            )
        figures.append(Figure(SECTION, f"{name}: {stage}", "CPU ms/sample", per_sample[stage], note))
    totals = [
        sum(v[i] for s, v in per_sample.items() if s not in NOT_IN_MOSAIC_EPOCH) for i in range(repeats)
    ]
    top = sorted(
        (s for s in stages if s not in NOT_IN_MOSAIC_EPOCH), key=lambda s: -statistics.median(per_sample[s])
    )[:2]
    figures.append(Figure(SECTION, f"{name}: mosaic epoch, all stages", "CPU ms/sample", totals))
    figures.append(
        Figure(
            SECTION,
            f"{name}: cores per 1,000 images/s",
            "cores",
            [cores_per_thousand(t) for t in totals],
            f"dominated by {top[0]} and {top[1]}",
        )
    )
    covered = [sum(v[i] for s, v in per_sample.items() if s in DECODE_STAGE) for i in range(repeats)]
    samples = staged[0][1]
    figures.append(
        Figure(
            SECTION,
            f"{name}: check: stages / decode stage",
            "ratio",
            [c / (w / samples) for c, w in zip(covered, whole, strict=True)],
            "the product's read task + TrainSampleDecoder on the same rows",
        )
    )
    store_read = [sum(per_sample[s][i] for s in STORE_READ) for i in range(repeats)]
    raw_ms = raw_read_ms(root, dataset, workload, repeats)
    raw = statistics.median(raw_ms)
    figures.append(Figure(SECTION, f"{name}: raw read of the same bytes", "CPU ms/sample", raw_ms))
    figures.append(
        Figure(
            SECTION,
            f"{name}: store read / raw read",
            "ratio",
            [raw / s for s in store_read],
            target=">= 0.25",
        )
    )
    return figures


def image_figures(images, per_sample_decode: list[float], device: str = "cpu") -> list[Figure]:
    fastest = [fastest_decode_ms(images) for _ in range(len(per_sample_decode))]
    gpu = []
    if device == "cuda":
        gpu.append(
            Figure(
                SECTION,
                "JPEG decode on the GPU (nvJPEG, batched)",
                "wall ms/image",
                [nvjpeg_decode_ms(images) for _ in range(len(per_sample_decode))],
                "torchvision decode_jpeg(device='cuda')",
            )
        )
    return [
        *gpu,
        Figure(
            SECTION,
            "JPEG decode: fastest here",
            "CPU ms/image",
            fastest,
            "decode_jpeg or PIL's bare decode (libjpeg-turbo), 640 x 480",
        ),
        Figure(
            SECTION,
            "JPEG decode: fastest / image decode stage",
            "ratio",
            [statistics.median(fastest) / d for d in per_sample_decode],
        ),
    ]


def run(root: str, argv: list[str]) -> list[Figure]:
    parser = argument_parser(__doc__)
    parser.add_argument("--rows", type=int, default=64, help="rows (and JPEGs) per workload")
    parser.add_argument(
        "--rows-per-part", type=int, default=ROWS_PER_PART, help="the stores' layout (store.rows_per_part)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--peer-rows",
        type=int,
        default=768,
        help="12 parts of the default size: on 2 cores, a pass in steady state",
    )
    parser.add_argument("--peer-passes", type=int, default=5, help="the first one warms up")
    parser.add_argument("--no-peer", action="store_true", help="skip the Ray path / DataLoader figures")
    parser.add_argument(
        "--gpu", action="store_true", help="host-to-device and the float decode on cuda:0; nvJPEG's rate"
    )
    args = parser.parse_args(argv)
    device = "cuda" if args.gpu and torch.cuda.is_available() else "cpu"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images = write_images(f"{root}/images", args.rows)
        figures: list[Figure] = []
        for workload in WORKLOADS:
            print(f"[data_plane] {workload.name}", flush=True)
            figures += measure_workload(root, workload, images, args.repeats, device, args.rows_per_part)
        decode = next(f for f in figures if f.name == f"{WORKLOADS[0].name}: {DECODE}")
        figures += image_figures(images, decode.values, device)
    finally:
        torch.set_num_threads(threads)
    if not args.no_peer:
        from benchmarks.data_plane_peer import peer_figures

        peer_images = write_images(f"{root}/peer-images", args.peer_rows)
        dataset = f"{root}/peer"
        manifest = write_store(dataset, WORKLOADS[0], peer_images, args.rows_per_part)
        cores = len(os.sched_getaffinity(0))
        figures += peer_figures(
            dataset, manifest, peer_images, cores, pipeline(), STUDENT_SIZE, MAX_OBJECTS, args.peer_passes
        )
    return figures


if __name__ == "__main__":
    from benchmarks.run_all import run_standalone

    run_standalone(run)
