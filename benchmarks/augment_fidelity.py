"""How exact each way to a teacher target is under augmentation, per teacher family: SAM ViT-B,
SAM 2 Hiera-T, DINOv2 ViT-S/14, DINOv3 ViT-S/16 and a ``run`` teacher (a YOLOv8-n this product
built), all with random weights (none can be downloaded here: the figures show the method and the
plumbing, not what a released teacher does; run ``vfmkd verify --augment N`` on yours).

Each teacher's store is precomputed (through Ray, as ``vfmkd precompute`` does) on synthetic
images as a store of views (``store.augment: yolov8``: the plain image and ``--views - 1`` mosaic
canvases of the s recipe per training image), then ``store.augment_fidelity`` draws N mosaic samples
and compares, against the live teacher on each augmented canvas, the unmoved stored map
(``plain``), the warped maps on the canvas without photometric steps (``warp (geometry)``) and on
the full canvas (``warp``), and N stored views against the teacher on their replayed canvases
(``view``: what ``under_augmentation: views`` trains on).
Figures: the per-sample mean cosine over the covered cells (median and range over the samples), and
what the warp costs the decode stage per sample (one core; random maps of SAM and DINO ViT-B sizes).

    .venv/bin/python -m benchmarks.augment_fidelity [--samples 16] [--images 32] [--size 128] [--views 2]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from benchmarks.figures import Figure, argument_parser
from vfmkd_ray import run_files
from vfmkd_ray.config import load_config
from vfmkd_ray.data.augment.recipe import yolov8_spec
from vfmkd_ray.data.augment.record import DrawContext, draw_record
from vfmkd_ray.data.synthetic import write_synthetic_coco
from vfmkd_ray.data.warped_features import warped_row
from vfmkd_ray.models.build import build_model
from vfmkd_ray.store import codecs
from vfmkd_ray.store.augment_fidelity import measure_augment_fidelity
from vfmkd_ray.store.manifest import LayerSpec, Manifest, read_manifest
from vfmkd_ray.store.precompute import run_precompute
from vfmkd_ray.store.schema import SCHEMA_VERSION, feature_column, scale_column
from vfmkd_ray.store.verify import teacher_config

SECTION = "teacher targets under augmentation"
FAMILIES = {  # alias -> (teacher name, input size: a multiple of its patch near --size)
    "sam": ("sam_vit_b", 16),
    "sam2": ("sam2_hiera_t", 32),
    "dinov2": ("dinov2_vits14", 14),
    "dinov3": ("dinov3_vits16", 16),
}


def run(root: str, flags: list[str]) -> list[Figure]:
    parser = argument_parser(__doc__)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--views", type=int, default=2, help="views stored per image (>= 2)")
    parser.add_argument("--gpu", action="store_true", help="(ignored: the comparison runs on the CPU)")
    args = parser.parse_args(flags)
    base = [
        f"data.root={root}/data",
        f"data.synthetic.num_images={args.images}",
        f"data.synthetic.image_size={args.size}",
        f"store.root={root}/store",
        f"train.storage_path={root}/runs",
        "store.rows_per_part=8",
        "store.augment=yolov8",
        f"store.views_per_image={args.views}",
        "teachers={}",
        "distill.terms={}",
    ]
    run_weights = _run_teacher(root, args.size, base)
    overrides = list(base)
    for alias, (name, patch) in FAMILIES.items():
        size = args.size // patch * patch
        overrides += [f"teachers.{alias}={{name: {name}, weights: random, input_size: {size}}}"]
    run_layers = "[backbone_s8, backbone_s16, neck_s8]"
    overrides += [
        f"teachers.run={{name: run, weights: {run_weights}, input_size: {args.size}, layers: {run_layers}}}"
    ]
    for alias in [*FAMILIES, "run"]:
        overrides += [f"distill.terms.{alias}={{type: feature_mse, teacher: {alias}}}"]
    cfg = load_config(None, overrides)
    write_synthetic_coco(cfg.data)
    figures = []
    for summary in run_precompute(cfg):
        manifest = read_manifest(summary.dataset)
        teacher = teacher_config(manifest, run_weights if summary.teacher == "run" else None)
        report = measure_augment_fidelity(summary.dataset, args.samples, teacher)
        for layer in report.layers:
            for way, fidelity in layer.ways.items():
                figures.append(
                    Figure(
                        SECTION,
                        f"{manifest.teacher} {layer.layer} at {manifest.input_size} px: {way}",
                        "cosine",
                        fidelity.cosines,
                        note=f"{len(fidelity.cosines)} samples, rel. error {fidelity.relative_error:.3g}, "
                        f"covered {1.0 if way == 'view' else layer.covered:.2f}; random weights",
                    )
                )
    return figures + warp_costs(args.samples)


def warp_costs(samples: int) -> list[Figure]:
    """Milliseconds of one CPU core to warp one sample's target (``data.warped_features``: four
    sources decoded, sampled and the target encoded again), at SAM and DINO ViT-B sizes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [
            _warp_cost(samples, *size) for size in ((256, 64, "fp16"), (256, 64, "int8"), (768, 40, "fp16"))
        ]
    finally:
        torch.set_num_threads(threads)


def _warp_cost(samples: int, channels: int, side: int, codec: str) -> Figure:
    spec = LayerSpec(shape=(channels, side, side), stride=16)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        teacher="random",
        teacher_weights="random(seed=0)",
        input_size=side * 16,
        layers={"map": spec},
        codec=codec,
        augment="none",
        row_count=samples,
        num_parts=1,
        dataset_fingerprint="synthetic",
    )
    ids = [f"image{i}" for i in range(samples)]
    rng = np.random.default_rng(0)
    rows = {}
    for image_id in ids:
        data, scale = codecs.encode(rng.standard_normal(spec.shape).astype(np.float32), codec)
        rows[image_id] = {feature_column("map"): codecs.stored_array(data, spec.shape, codec)}
        if codec == "int8":
            rows[image_id][scale_column("map")] = scale
    context = DrawContext(0, 0, 1, 640)
    records = [draw_record(yolov8_spec("s", 0), context, image_id, ids) for image_id in ids]
    sizes, mirrored = dict.fromkeys(ids, (480, 640)), dict.fromkeys(ids, False)
    times = []
    for record in records:
        started = time.perf_counter()
        warped_row(record, rows, sizes, mirrored, manifest)  # no cache: each of its sources decoded
        times.append((time.perf_counter() - started) * 1000)
    name = f"warp one sample: {channels} x {side} x {side} {codec}"
    return Figure(SECTION, name, "ms", times, note="one core, four sources decoded per sample")


def _run_teacher(root: str, size: int, base: list[str]) -> str:
    """A YOLOv8-n detector (PAFPN neck, yolov8 head) as this product writes a run's best model (untrained)."""
    detector = ["neck={type: yolov8_pafpn}", "heads={det: {type: yolov8, num_classes: 3}}"]
    cfg = load_config(None, [*base, "name=run_teacher", f"data.input_size={size}", *detector])
    run_dir = f"{root}/runs/run_teacher"
    run_files.write_best(run_dir, build_model(cfg).model, cfg.model_dump(mode="json"))
    return run_files.path(run_dir, run_files.BEST_MODEL)


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        for figure in run(root, sys.argv[1:]):
            print(
                f"{figure.name}: {figure.median:.4f} [{figure.low:.4f}, {figure.high:.4f}]  ({figure.note})"
            )


if __name__ == "__main__":
    main()
