"""Recipe parity: YOLOv8-n from scratch, trained three ways on one synthetic COCO set.

- **new**: vfmkd with ``configs/yolov8s_coco.yaml`` (MMYOLO's YOLOv8 recipe: SGD, warm-up, linear
  decay, EMA, Mosaic/affine/Albu/HSV/flip with close-mosaic, best by COCO mAP) at size n;
- **old**: the same run with the recipe vfmkd had before (AdamW lr 2e-3, weight decay 0.01, cosine
  from step 0, no warm-up, no EMA, no augmentation, no shuffle);
- **mmyolo**: MMYOLO's own ``Runner`` on its packaged ``yolov8_n_syncbn_fast_8xb16-500e_coco.py``
  (``benchmarks/mmyolo_trainer.py`` says what is adapted: data, classes, scale, epochs,
  close-mosaic, warm-up floor, validation interval, loader workers, CPU).

The two sides change the same things the same way: the epochs; close-mosaic; the validation interval
(scored every ``--val-interval`` epochs and each close-mosaic epoch, MMYOLO's ``dynamic_intervals``);
the warm-up floor (MMYOLO's 1,000 iterations would cover the whole short run, so both warm up over
3 epochs alone); the batch (16 on one process: MMYOLO's rule leaves weight decay unscaled there, on
both sides). The training split is a whole number of batches (``whole_batches``), so both take the
same steps. Each run is a subprocess timed from launch to exit, one after the other, so each has
the machine's cores; both train on the CPU (MMYOLO's sees no CUDA device).

Every run is scored at its last epoch, EMA weights where the recipe has them, by pycocotools on
``val.json``: vfmkd in its loop (the same ``COCOeval`` over the same images and annotations),
MMYOLO's last ``CocoMetric`` detections file rescored here. Images/s is each run's median training
rate over its epochs after the first, counted alike on both sides (first batch's arrival to the last
step's end, data waits included). With ``--repeats N`` new and mmyolo train N times each, one after
the other (new, mmyolo, new, ...), and each ratio is taken per pair: one run each could not tell a
few per cent apart from the machine's drift over half an hour (``old`` trains once).

    .venv/bin/python -m benchmarks.recipe_parity [--images 398] [--image-size 160] [--epochs 30]
        [--close-mosaic 5] [--val-interval 10] [--only new old mmyolo] [--repeats 1] [--keep DIR]

Needs the OpenMMLab stack (``make mm``) for the MMYOLO side.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.figures import Figure, argument_parser
from vfmkd_ray import run_files
from vfmkd_ray.data.coco import read_dataset
from vfmkd_ray.data.coco_scores import ground_truth, score
from vfmkd_ray.data.config import DataConfig, SyntheticConfig
from vfmkd_ray.data.splits import is_validation
from vfmkd_ray.data.synthetic import write_synthetic_coco

SECTION = "recipe parity with MMYOLO"
REPO = Path(__file__).resolve().parents[1]
RECIPE_CONFIG = REPO / "configs" / "yolov8s_coco.yaml"
VAL_FRACTION = 0.2
BATCH = 16
MIN_TRAIN, MIN_VAL = 256, 64  # the smallest set
# What vfmkd trained with before the recipe issue (the TrainConfig defaults, no augmentation, no
# shuffle); parameter groups (no decay on norm and bias) are not optional any more.
OLD_RECIPE = (
    "train.optimizer=adamw",
    "train.lr=0.002",
    "train.weight_decay=0.01",
    "train.schedule=cosine",
    "train.lr_factor=0",
    "train.warmup_epochs=0",
    "train.ema=false",
    "data.augment.pipeline=none",
    "data.shuffle=false",
)
RUNS = ("new", "old", "mmyolo")


@dataclass(frozen=True)
class Outcome:
    """One trained run: its last epoch's COCO box scores, wall time and steady training rate."""

    run: str
    mAP: float
    AP50: float
    AP_small: float
    wall_s: float
    images_per_s: float


def whole_batches(images: int) -> int:
    """The fewest images from ``images`` up whose training split is a whole number of batches:
    vfmkd drops an epoch's last partial batch and MMYOLO's loader does not, so only then do both
    take the same steps per epoch."""
    while sum(not is_validation(str(i), VAL_FRACTION) for i in range(1, images + 1)) % BATCH:
        images += 1
    return images


def write_dataset(root: Path, images: int, image_size: int, seed: int) -> tuple[int, int]:
    """Synthetic shapes at ``image_size`` px under ``root``: ``annotations.json`` (what vfmkd reads,
    split by ``data.val_fraction``) and the same split as ``train.json`` / ``val.json`` (MMYOLO's)."""
    data = DataConfig(
        root=str(root),
        images_dir="images",
        annotations="annotations.json",
        val_fraction=VAL_FRACTION,
        synthetic=SyntheticConfig(num_images=images, image_size=image_size, seed=seed),
    )
    write_synthetic_coco(data)
    coco = json.loads((root / "annotations.json").read_text())
    val_ids = {im["id"] for im in coco["images"] if is_validation(str(im["id"]), VAL_FRACTION)}
    for name, keep in (("train.json", lambda i: i not in val_ids), ("val.json", lambda i: i in val_ids)):
        subset = {
            "images": [im for im in coco["images"] if keep(im["id"])],
            "annotations": [a for a in coco["annotations"] if keep(a["image_id"])],
            "categories": coco["categories"],
        }
        (root / name).write_text(json.dumps(subset))
    train, val = len(coco["images"]) - len(val_ids), len(val_ids)
    if train < MIN_TRAIN or val < MIN_VAL:
        print(f"[bench] note: {train} training / {val} validation images, under {MIN_TRAIN}/{MIN_VAL}")
    return train, val


def vfmkd_overrides(args, data: Path, runs: Path, name: str) -> list[str]:
    """``configs/yolov8s_coco.yaml`` adapted to this data and machine, as MMYOLO's config is."""
    return [
        f"name={name}",
        f"seed={args.seed}",
        f"data.root={data}",
        "data.images_dir=images",
        "data.annotations=annotations.json",
        f"data.val_fraction={VAL_FRACTION}",
        f"data.input_size={args.image_size}",
        f"data.augment.close_mosaic_epochs={args.close_mosaic}",
        "student.size=n",
        "heads.det.num_classes=3",
        f"train.storage_path={runs}",
        f"train.epochs={args.epochs}",
        f"train.batch_size={BATCH}",
        "train.num_workers=1",
        f"train.cpus_per_worker={os.cpu_count() or 1}",
        "train.use_gpu=false",
        "train.sync_bn=false",
        "train.warmup_min_steps=0",
        f"train.eval_every_epochs={args.val_interval}",
    ]


def train_vfmkd(args, data: Path, work: Path, run: str, attempt: int = 1) -> Outcome:
    runs, name = work / "runs", f"parity-{run}-{attempt}"
    overrides = vfmkd_overrides(args, data, runs, name) + list(OLD_RECIPE if run == "old" else ())
    command = [str(Path(sys.executable).parent / "vfmkd"), "train", str(RECIPE_CONFIG), *overrides]
    wall = _timed(command, work / f"{run}-{attempt}.log")
    history = run_files.read_metrics_log(str(runs / name))
    if len(history) != args.epochs:
        raise RuntimeError(f"vfmkd {run}: {len(history)} epoch records, expected {args.epochs}")
    last = history[-1]
    rates = [record["throughput/train_images_per_s"] for record in history[1:]]
    return Outcome(
        run, last["det/mAP"], last["det/AP50"], last["det/AP_small"], wall, statistics.median(rates)
    )


def train_mmyolo(args, data: Path, work: Path, attempt: int = 1) -> Outcome:
    work_dir = work / f"mmyolo-{attempt}"
    command = [
        sys.executable,
        "-m",
        "benchmarks.mmyolo_trainer",
        f"--data={data}",
        f"--work-dir={work_dir}",
        f"--img-scale={args.image_size}",
        f"--epochs={args.epochs}",
        f"--close-mosaic={args.close_mosaic}",
        f"--val-interval={args.val_interval}",
        "--warmup-min-iters=0",
        f"--batch-size={BATCH}",
        f"--workers={os.cpu_count() or 1}",
        f"--seed={args.seed}",
    ]
    wall = _timed(command, work / f"mmyolo-{attempt}.log", {"CUDA_VISIBLE_DEVICES": ""})  # both on CPUs
    result = json.loads((work_dir / "result.json").read_text())
    detections = json.loads(Path(result["detections"]).read_text())
    scores = score_detections(data, detections)
    rates = [epoch["images"] / epoch["seconds"] for epoch in result["epochs"][1:]]
    return Outcome(
        "mmyolo", scores["mAP"], scores["AP50"], scores["AP_small"], wall, statistics.median(rates)
    )


def score_detections(data: Path, detections: list[dict]) -> dict[str, float]:
    """COCO box scores of a results list against ``data``'s ``val.json``, with the ground truth and
    scorer vfmkd's loop uses (``coco_scores.ground_truth`` and ``score``)."""
    val = DataConfig(root=str(data), images_dir="images", annotations="val.json")
    dataset = read_dataset(val)
    truth = ground_truth(dataset, dataset.records)
    return score(truth, detections, "bbox")


def _timed(command: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Runs ``command`` from the repository root (``env`` added to this one's), its output to
    ``log``; its wall seconds."""
    print(f"[bench] {' '.join(command[:4])} ... (log: {log})", flush=True)
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(
            command,
            cwd=REPO,
            env=os.environ | (env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    wall = time.monotonic() - started
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-20:]
        raise RuntimeError(f"{command[0]} exited {done.returncode}:\n" + "\n".join(tail))
    return wall


def figures(outcomes: dict[str, list[Outcome]], setting: str) -> list[Figure]:
    """Each run's figures over its repeats; the ratios new / mmyolo per pair of runs made one after
    the other (the machine's speed drifts over the half hour a pair takes)."""
    out = []
    for run, repeats in outcomes.items():
        for metric in ("mAP", "AP50", "AP_small"):
            values = [getattr(o, metric) for o in repeats]
            out.append(Figure(SECTION, f"{run}: val {metric}", "COCO AP", values, setting))
        rates = [o.images_per_s for o in repeats]
        out.append(Figure(SECTION, f"{run}: training rate", "images/s", rates, setting))
        out.append(Figure(SECTION, f"{run}: wall time", "s", [o.wall_s for o in repeats], setting))
    if "new" in outcomes and "mmyolo" in outcomes:
        pairs = list(zip(outcomes["new"], outcomes["mmyolo"], strict=False))
        for label, metric, target in (
            ("val mAP", "mAP", ">= 0.95"),
            ("training images/s", "images_per_s", ">= 1.0"),
            ("wall time", "wall_s", None),
        ):
            ratios = [_ratio(getattr(new, metric), getattr(peer, metric)) for new, peer in pairs]
            out.append(Figure(SECTION, f"new / mmyolo: {label}", "ratio", ratios, setting, target or ""))
    if "new" in outcomes and "old" in outcomes:
        pairs = zip(outcomes["new"], outcomes["old"], strict=False)
        ratios = [_ratio(new.mAP, old.mAP) for new, old in pairs]
        out.append(Figure(SECTION, "new / old: val mAP", "ratio", ratios, setting))
    return out


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def run(root: str, flags: list[str]) -> list[Figure]:
    parser = argument_parser(__doc__)
    parser.add_argument("--images", type=int, default=398, help="at least this many (whole_batches)")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--close-mosaic", type=int, default=5)
    parser.add_argument("--val-interval", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="train new and mmyolo this many times, one after the other (old once)",
    )
    parser.add_argument(
        "--keep", type=Path, help="work here and keep the logs and runs (default: a temporary dir)"
    )
    parser.add_argument("--gpu", action="store_true", help="not supported: both sides train on the CPU here")
    args = parser.parse_args(flags)
    work = (args.keep or Path(root) / "recipe_parity").resolve()
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    train, val = write_dataset(data, whole_batches(args.images), args.image_size, args.seed)
    setting = (
        f"YOLOv8-n from scratch, {train} train / {val} val synthetic images at {args.image_size} px, "
        f"{args.epochs} epochs (close-mosaic {args.close_mosaic}), batch {BATCH}, {os.cpu_count()} CPUs"
    )
    print(f"[bench] {setting}", flush=True)
    outcomes: dict[str, list[Outcome]] = {}
    for attempt in range(1, args.repeats + 1):
        for name in args.only:
            if name == "old" and attempt > 1:
                continue  # the recipe before: one run says how far the new one moved
            began = time.monotonic()
            outcome = (
                train_mmyolo(args, data, work, attempt)
                if name == "mmyolo"
                else train_vfmkd(args, data, work, name, attempt)
            )
            outcomes.setdefault(name, []).append(outcome)
            print(f"[bench] {name} {attempt}: {outcome} ({time.monotonic() - began:.0f} s)", flush=True)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return figures(outcomes, setting)


if __name__ == "__main__":
    from benchmarks.run_all import run_standalone

    run_standalone(run)
