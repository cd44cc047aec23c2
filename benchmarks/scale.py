"""How the store's driver-side work and an epoch's reads grow with the store: 1k, 10k and 100k rows.

A tiny-feature store (one 16x4x4 fp16 layer, 64 rows per part, written through the real
``PartWriter``, then its index and a manifest naming it; unique image ids whose ``image_uri`` cycles
through a pool of 64 synthetic 64 px PNGs, so no teacher runs) is measured at each size:

- ``plan``: load the index and plan the train and validation passes (``training.read_plan``);
- ``resume scan``: what a precompute re-run does to find what is stored (index + rows to do), and
  beside it the scan of every part's ``image_id`` column that it replaced;
- ``row index``: another teacher's ``StoreRowIndex`` built from the index, and beside it one built
  from a scan of every part (``build_index`` without the index);
- ``epoch pass``: the read stage (``store.ray_source.read_parts``, one part per call as the Ray
  source's tasks) over both passes' planned row groups, then ``TrainSampleDecoder`` (feature checks
  and decode, image fetch, decode and letterbox), in this process without Ray (Ray Data at 100k
  rows would take far longer on a small machine); with the bytes read over the bytes used.

Each stage: wall seconds and the peak resident memory it added above the RSS it started at
(the kernel's high-water mark, reset per stage: ``ru_maxrss`` cannot be reset, tracemalloc misses
Arrow's buffers, and a sampling thread misses what is allocated while the GIL is held), and a
growth exponent (least squares of log time on log rows; 1.0 is linear).

Peer: at ``--peer-rows`` (default: the smallest size) one training epoch (after a warm-up epoch)
through Ray Data as ``training.streams`` builds it and a Train worker reads it (``read_store_rows``
-> ``TrainSampleDecoder``, split by Ray Train's ``DataConfig`` -> ``BatchFeed.batches``'
``iter_torch_batches``, on a local Ray; ``benchmarks.worker_shard`` says why the split) against what
a user without Ray would write: a ``torch.utils.data.DataLoader`` (a worker per CPU, none with one
CPU) over the same parts, read with pyarrow and decoded by the same decoder; both feed the same
``train_step`` of a YOLOv8-n student at 64 px, training on the same thread count in this process.

    python -m benchmarks.scale [--sizes 1000,10000,100000] [--peer-rows N] [--peer-batch-size 8]
        [--no-peer] [--gpu]

``make bench`` runs it as ``scale``.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
import torch

from benchmarks.data_plane_peer import PartSamples
from benchmarks.figures import Figure, argument_parser, ratio
from benchmarks.worker_shard import decoded_shard
from benchmarks.workload import bench_config
from vfmkd_ray.batch import Batch
from vfmkd_ray.config import ExperimentConfig
from vfmkd_ray.data.coco import ImageRecord, read_image_records
from vfmkd_ray.data.config import DataConfig
from vfmkd_ray.data.pipeline import SampleSpec, TrainSampleDecoder
from vfmkd_ray.data.samples import load_letterboxed
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.store.index import build_index, load_index, read_index, write_index
from vfmkd_ray.store.manifest import LayerSpec, Manifest, StoreDataset, dataset_fingerprint, write_manifest
from vfmkd_ray.store.parts import PartWriter, list_parts, stored_image_ids
from vfmkd_ray.store.precompute import rows_to_do
from vfmkd_ray.store.ray_source import (
    PART_COLUMN,
    ROW_GROUPS_COLUMN,
    STORED_BYTES_COLUMN,
    read_parts,
    read_store_rows,
)
from vfmkd_ray.store.row_index import StoreRowIndex
from vfmkd_ray.store.schema import SCHEMA_VERSION, aug_seed_for, feature_column
from vfmkd_ray.training.batch_feed import BatchFeed
from vfmkd_ray.training.read_plan import PartReads, plan_reads
from vfmkd_ray.training.step import train_step
from vfmkd_ray.training.step_clock import StepClock
from vfmkd_ray.training.streams import decode_task_cpus
from vfmkd_ray.training.task import build_task

SECTION = "Store at scale (driver side and an epoch's reads)"
LAYER, SHAPE, ROWS_PER_PART, VAL_FRACTION = "embed", (16, 4, 4), 64, 0.125
ALIAS, INPUT_SIZE, POOL_IMAGES, SEED = "sam", 64, 64, 0  # 64 px at stride 16: the 4 x 4 grid


class PeakRss:
    """``with PeakRss() as rss``: ``rss.mib`` is the peak resident memory of the block above the
    RSS it started at, from the kernel's high-water mark (``VmHWM``), reset on entry.

    A sampling thread misses allocations made while the GIL is held (``np.ones`` fills 64 MiB
    without releasing it, and frees it before the thread runs again); the kernel counts every page
    the block makes resident (memory malloc reuses from pages already resident adds nothing).
    """

    def __enter__(self) -> PeakRss:
        gc.collect()  # what earlier stages left behind is not this one's
        _reset_high_water_mark()
        self.start = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = _status_bytes("VmHWM")

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def _reset_high_water_mark() -> None:
    """Writing 5 to ``clear_refs`` sets ``VmHWM`` to the current RSS (Linux 4.0 and later)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError as error:
        raise OSError(f"peak RSS needs a writable /proc/self/clear_refs (Linux): {error}") from error


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    raise OSError(f"/proc/self/status has no {field} line")


def image_pool(root: str) -> list[tuple[ImageRecord, tuple[int, int]]]:
    """The synthetic PNGs store rows point at, each with its letterboxed (valid_h, valid_w)."""
    data = DataConfig.model_validate(
        {"root": f"{root}/pool", "synthetic": {"num_images": POOL_IMAGES, "image_size": INPUT_SIZE}}
    )
    write_synthetic_coco(data)  # once per root: it skips a dataset that is there
    return [(r, load_letterboxed(r.image_uri, INPUT_SIZE, 0, "none")[1]) for r in read_image_records(data)]


def build_store(dataset: str, rows: int, pool: list[tuple[ImageRecord, tuple[int, int]]]):
    """``rows`` rows in parts of ``ROWS_PER_PART``, their index and a manifest naming it; returns
    the manifest and the image records (ids unique, image URIs cycling through ``pool``)."""
    rng = np.random.default_rng(0)
    picks = [pool[i % len(pool)] for i in range(rows)]
    records = [ImageRecord(f"img{i:07d}", r.image_uri, r.width, r.height) for i, (r, _) in enumerate(picks)]
    writer = PartWriter(dataset, [LAYER], "fp16")
    for start in range(0, rows, ROWS_PER_PART):
        chunk = records[start : start + ROWS_PER_PART]
        valid = np.array([hw for _, hw in picks[start : start + ROWS_PER_PART]], np.int32)
        writer(
            {
                "image_id": np.array([r.image_id for r in chunk]),
                "image_uri": np.array([r.image_uri for r in chunk]),
                "aug_seed": np.array([aug_seed_for(r.image_id, SEED) for r in chunk], np.int64),
                "valid_h": valid[:, 0],
                "valid_w": valid[:, 1],
                feature_column(LAYER): rng.standard_normal((len(chunk), *SHAPE)).astype(np.float32),
            }
        )
    index = build_index(dataset)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        teacher="synthetic",
        teacher_weights="random(seed=0)",
        input_size=INPUT_SIZE,
        layers={LAYER: LayerSpec(shape=SHAPE, stride=16)},
        codec="fp16",
        augment="none",
        row_count=index.num_rows,
        num_parts=len(pc.unique(index.column("part"))),
        dataset_fingerprint=dataset_fingerprint(records),
        index_sha256=write_index(dataset, index),  # first: a manifest never names a missing index
    )
    write_manifest(dataset, manifest)
    return manifest, records


def measure(stage: Callable[[], object]) -> tuple[float, float, object]:
    """(seconds, MiB of resident memory the stage added at its peak, the stage's result)."""
    with PeakRss() as rss:
        started = time.perf_counter()
        result = stage()
        seconds = time.perf_counter() - started
    return seconds, rss.mib, result


def split_ids(records: list[ImageRecord]) -> dict[str, list[str]]:
    ids = [r.image_id for r in records]
    val = [i for i in ids if is_validation(i, VAL_FRACTION)]
    return {"train": [i for i in ids if not is_validation(i, VAL_FRACTION)], "val": val}


def decoder_for(store: StoreDataset) -> TrainSampleDecoder:
    return TrainSampleDecoder(store, SampleSpec(INPUT_SIZE, store.manifest.augment))


def epoch_pass(store: StoreDataset, plans: list[PartReads]) -> tuple[int, int]:
    """Both passes through the read stage and the decoder: (samples, bytes the read stage read)."""
    decoder = decoder_for(store)
    samples = read = 0
    for plan in plans:
        for part, groups in plan.row_groups.items():
            table = read_parts(pa.table({PART_COLUMN: [part], ROW_GROUPS_COLUMN: [groups]}))
            read += int(pc.sum(table.column(STORED_BYTES_COLUMN)).as_py())
            samples += sum(len(out[STORED_BYTES_COLUMN]) for out in decoder(table))
    return samples, read


def whole_parts_bytes(dataset: str) -> int:
    """The compressed bytes of every row group of every part: one pass reading parts whole."""
    total = 0
    for part in list_parts(dataset):
        meta = pq.ParquetFile(part).metadata
        total += sum(
            meta.row_group(g).column(c).total_compressed_size
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
        )
    return total


def measure_size(root: str, rows: int) -> dict[str, tuple[float, float]]:
    """Stage -> (seconds, MiB) at ``rows`` rows, and the bytes figures as (ratio, 0)."""
    dataset = f"{root}/synthetic/{rows}"
    pool = image_pool(root)
    seconds, peak, (manifest, records) = measure(lambda: build_store(dataset, rows, pool))
    figures = {"build store (not a product stage)": (seconds, peak)}
    store = StoreDataset(ALIAS, dataset, manifest)
    split = split_ids(records)

    def plan() -> list[PartReads]:
        index = load_index(dataset, manifest.index_sha256)
        return [plan_reads(index, dataset, ids, 0) for ids in split.values()]

    seconds, peak, plans = measure(plan)
    figures["plan"] = (seconds, peak)
    seconds, peak, todo = measure(
        lambda: rows_to_do(records, build_index(dataset, read_index(dataset, manifest.index_sha256)), 1, 0)
    )
    assert todo.num_rows == 0
    figures["resume scan"] = (seconds, peak)
    seconds, peak, ids = measure(lambda: stored_image_ids(dataset))
    assert len(ids) == rows
    figures["resume scan, old (every part's ids)"] = (seconds, peak)
    seconds, peak, by_index = measure(lambda: StoreRowIndex.build(store))
    figures["row index"] = (seconds, peak)
    seconds, peak, by_scan = measure(lambda: StoreRowIndex.build(store, build_index(dataset)))
    assert by_scan.locations == by_index.locations and len(by_index.locations) == rows
    figures["row index, old (a scan of every part)"] = (seconds, peak)
    del by_index, by_scan
    seconds, peak, (decoded, read) = measure(lambda: epoch_pass(store, plans))
    assert decoded == rows, decoded
    figures["epoch pass (read + decode, in-process, no Ray)"] = (seconds, peak)
    index = load_index(dataset, manifest.index_sha256)
    used = sum(
        int(
            pc.sum(
                index.filter(pc.is_in(index.column("image_id"), pa.array(i, pa.string())))["nbytes"]
            ).as_py()
        )
        for i in split.values()
        if i
    )
    figures["bytes read / used"] = (read / used, 0.0)
    figures["bytes read / used, whole parts twice (before)"] = (2 * whole_parts_bytes(dataset) / used, 0.0)
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
            cells = [f"{s:.3f} s, +{m:.1f} MiB" for s, m in values]
            exponent = f"{growth_exponent(sizes, [s for s, _ in values]):.2f}" if len(sizes) > 1 else ""
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {exponent} |")
    return "\n".join(lines)


def data_loader_batches(plan: PartReads, store: StoreDataset, feed: BatchFeed) -> Iterator[Batch]:
    cpus = len(os.sched_getaffinity(0))
    loader = torch.utils.data.DataLoader(
        PartSamples(plan.row_groups, decoder_for(store)),
        batch_size=feed.batch_size,
        drop_last=True,
        num_workers=cpus if cpus > 1 else 0,
        pin_memory=feed.device.type == "cuda",
    )
    return (feed.to_batch(raw) for raw in loader)


def ray_epochs(
    plan: PartReads, store: StoreDataset, cfg: ExperimentConfig
) -> Callable[[BatchFeed], Iterator]:
    """The training stream as ``training.streams`` builds it, split once for one Train worker as Ray
    Train splits it at a run's start; each call iterates the shard for an epoch, as the worker does."""
    decode_cpus = decode_task_cpus(cfg, ray.cluster_resources().get("CPU", 0.0))
    rows = read_store_rows(plan.row_groups, decode_cpus)
    shard = decoded_shard(rows, decoder_for(store), decode_cpus)
    return lambda feed: feed.batches(shard, drop_last=True)


def peer_rates(root: str, rows: int, batch_size: int, gpu: bool) -> dict[str, float]:
    """Images/s of the second training epoch over the store of ``rows`` rows: Ray path, DataLoader."""
    from vfmkd_ray.ray_session import ensure_ray

    dataset = f"{root}/peer/{rows}"
    manifest, records = build_store(dataset, rows, image_pool(root))
    store = StoreDataset(ALIAS, dataset, manifest)
    plan_ids = split_ids(records)["train"]
    plan = plan_reads(load_index(dataset, manifest.index_sha256), dataset, plan_ids, 0)
    cfg = bench_config(root, [f"teachers.{ALIAS}.input_size={INPUT_SIZE}", f"train.batch_size={batch_size}"])
    device = torch.device("cuda" if gpu else "cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))  # what Ray gives one worker
    try:
        rates = {}
        # The DataLoader first: its workers fork this process, better before Ray's threads exist.
        for name in ("DataLoader", "Ray path"):
            if name == "Ray path":
                ensure_ray()
                batches = ray_epochs(plan, store, cfg)
            else:
                batches = lambda feed: data_loader_batches(plan, store, feed)  # noqa: E731
            rates[name] = train_epochs(cfg, device, batches, 2 * len(plan_ids) // batch_size)
            print(f"[scale] {name}: {rates[name]:.1f} images/s", flush=True)
        return rates
    finally:
        torch.set_num_threads(threads)


def train_epochs(
    cfg: ExperimentConfig, device: torch.device, batches: Callable[[BatchFeed], Iterator], steps: int
) -> float:
    """Two epochs of ``train_step`` from a fresh model over ``batches(feed)``; the second's images/s."""
    task = build_task(cfg, {ALIAS: {LAYER: SHAPE}}, steps, device)
    keys = frozenset(task.parts.teacher_keys())
    feed = BatchFeed(keys, {ALIAS: "fp16"}, device, cfg.train.batch_size, cfg.train.prefetch_batches)
    rate = 0.0
    for _ in range(2):  # the first epoch warms up (allocator, thread pools, Ray's workers)
        task.parts.model.train()
        clock = StepClock()
        for batch in batches(feed):
            clock.batch_arrived()
            train_step(task.parts.model, batch, task, cfg.train.grad_clip_norm)
            clock.step_done(len(batch))
        rate = clock.images_per_s
    return rate


def run(root: str, argv: list[str]) -> list[Figure]:
    parser = argument_parser(__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--peer-rows", type=int, default=0, help="default: the smallest of --sizes")
    parser.add_argument("--peer-batch-size", type=int, default=8)
    parser.add_argument("--no-peer", action="store_true", help="skip the Ray path / DataLoader epoch")
    parser.add_argument("--gpu", action="store_true", help="the peer epoch trains on cuda:0")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    for rows in sizes:
        results[rows] = measure_size(root, rows)
        print(f"[scale] {rows:,} rows measured", flush=True)
    print(table(results), flush=True)
    figures = size_figures(sizes, results)
    if not args.no_peer:
        rows = args.peer_rows or min(sizes)
        rates = peer_rates(root, rows, args.peer_batch_size, args.gpu)
        note = f"{rows:,} rows, batch {args.peer_batch_size}, second epoch"
        figures += [
            Figure(SECTION, f"training epoch: {name}", "images/s", [r], note) for name, r in rates.items()
        ]
        figures.append(
            ratio(
                SECTION, "Ray path / DataLoader", [rates["Ray path"]], [rates["DataLoader"]], target=">= 1.0"
            )
        )
    return figures


def size_figures(sizes: list[int], results: dict[int, dict[str, tuple[float, float]]]) -> list[Figure]:
    figures = []
    for stage in results[sizes[0]]:
        if stage.startswith("bytes"):
            figures += [
                Figure(SECTION, f"{stage} at {n:,} rows", "ratio", [results[n][stage][0]]) for n in sizes
            ]
            continue
        for n in sizes:
            figures.append(Figure(SECTION, f"{stage} at {n:,} rows", "s", [results[n][stage][0]]))
            figures.append(
                Figure(SECTION, f"{stage} at {n:,} rows: memory", "MiB", [results[n][stage][1]], "RSS rise")
            )
        if len(sizes) > 1:
            exponent = growth_exponent(sizes, [results[n][stage][0] for n in sizes])
            figures.append(Figure(SECTION, f"{stage}: growth exponent", "", [exponent], target="<= 1.1"))
    return figures


if __name__ == "__main__":
    from benchmarks.run_all import run_standalone

    run_standalone(run)
