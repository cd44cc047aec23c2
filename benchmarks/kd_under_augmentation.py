"""KD under augmentation: does the way a stored teacher's target follows the augmentation matter?

On the synthetic tiny-objects set of ``configs/transfer_tiny.yaml`` (no downloaded weights: the
teacher is a ``run`` teacher trained here first, a YOLOv8-s + stride-4 neck + yolc detector), a
YOLOv8-n detector of the same kind trains with MMYOLO's augmentation (``data.augment.pipeline:
yolov8``) and, in the same loop, distils the teacher's backbone levels (three ``feature_mse``
terms) with the teacher's target under augmentation taken four ways:

- ``views``: the teacher's maps of stored augmented canvases (``store.augment: yolov8``, one store
  per seed: a store of views is tied to its seed);
- ``warp``: the plain store's maps carried into each canvas, uncovered cells masked;
- ``online``: the teacher run in the workers on every canvas;
- ``none``: no KD (no teacher, no terms): the baseline.

Same epochs and steps for every arm, ``--seeds`` seeds each. Every run is scored at its last epoch
in its loop (pycocotools on the validation split no run trained on: ``det/mAP``, ``det/AP50``);
each arm's mean, standard error and difference with ``none`` follow the transfer experiment's rule
(``transfer.statistics``: a difference "exceeds 2 SE" when it is more than twice its standard error
with 2 runs or more on each side). Also per arm: the training rate (median over the epochs after the
first) and the bytes of the stores it read; and the fidelity of the seed-0 view store (``vfmkd verify
--augment``: ``view`` / ``warp`` / ``plain`` cosines against the live teacher). Each step is a
subprocess of the ``vfmkd`` CLI, one after the other, so each has the machine's cores.

    .venv/bin/python -m benchmarks.kd_under_augmentation [--epochs 12] [--close-mosaic 2]
        [--seeds 0 1 2] [--views 4] [--teacher-epochs 30] [--images 192] [--keep DIR]
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
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.figures import Figure, argument_parser
from vfmkd_ray import run_files
from vfmkd_ray.transfer.statistics import compare, summarize

SECTION = "KD under augmentation (tiny objects)"
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "transfer_tiny.yaml"
ARMS = ("views", "warp", "online", "none")
METRICS = ("det/mAP", "det/AP50")


@dataclass
class Arm:
    name: str
    scores: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    rates: list[float] = field(default_factory=list)
    store_bytes: list[int] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)


def _vfmkd(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "vfmkd"), *args]


def _timed(command: list[str], log: Path) -> float:
    """Runs ``command`` from the repository root, its output to ``log``; its wall seconds."""
    print(f"[bench] {' '.join(command[1:3])} {command[-1]} ... (log: {log})", flush=True)
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-20:]
        raise RuntimeError(f"{' '.join(command[1:3])} exited {done.returncode}:\n" + "\n".join(tail))
    return time.monotonic() - started


def _bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.parquet"))


def _base(args, work: Path) -> list[str]:
    return [
        f"data.root={work / 'data'}",
        f"data.synthetic.num_images={args.images}",
        f"train.storage_path={work / 'runs'}",
        f"teachers.detector.weights={work / 'runs' / 'teacher' / 'best_model.pth'}",
    ]


def _arm_overrides(args, work: Path, arm: str, seed: int) -> list[str]:
    """The joint detection + KD run of ``arm`` at ``seed`` (``none``: detection alone)."""
    common = [
        f"name={arm}-s{seed}",
        f"seed={seed}",
        "data.augment.pipeline=yolov8",
        f"data.augment.close_mosaic_epochs={args.close_mosaic}",
        f"train.epochs={args.epochs}",
        f"train.eval_every_epochs={args.epochs}",
    ]
    if arm == "none":
        return [*common, "teachers={}", "distill.terms={}"]
    common.append(f"teachers.detector.under_augmentation={arm}")
    if arm == "views":
        return [*common, *_views_store(args, work, seed)]
    return [*common, f"store.root={work / 'store-plain'}"]


def _views_store(args, work: Path, seed: int) -> list[str]:
    return [
        f"store.root={work / f'store-views-s{seed}'}",
        "store.augment=yolov8",
        f"store.views_per_image={args.views}",
    ]


def _score(run_dir: Path, epochs: int) -> tuple[dict[str, float], float]:
    history = run_files.read_metrics_log(str(run_dir))
    if len(history) != epochs:
        raise RuntimeError(f"{run_dir}: {len(history)} epoch records, expected {epochs}")
    rates = [record["throughput/train_images_per_s"] for record in history[1:]] or [math.nan]
    return {metric: history[-1][metric] for metric in METRICS}, statistics.median(rates)


def run(root: str, flags: list[str]) -> list[Figure]:
    parser = argument_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--close-mosaic", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--views", type=int, default=4, help="store.views_per_image of the view stores")
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--keep", type=Path, help="work here and keep the runs (default: a temporary dir)")
    parser.add_argument("--gpu", action="store_true", help="not supported: every run trains on the CPU")
    args = parser.parse_args(flags)
    work = (args.keep or Path(root) / "kd_under_augmentation").resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    base = _base(args, work)
    config = str(CONFIG)
    _timed(_vfmkd("synth", config, *base), work / "logs" / "synth.log")
    teacher = work / "runs" / "teacher" / "best_model.pth"
    if not teacher.exists():
        teacher_run = ["name=teacher", "student.size=s", "teachers={}", "distill.terms={}"]
        _timed(
            _vfmkd("train", config, *base, *teacher_run, f"train.epochs={args.teacher_epochs}"),
            work / "logs" / "teacher.log",
        )
    if {"warp"} & set(args.arms) and not (work / "store-plain").exists():
        _timed(
            _vfmkd("precompute", config, *base, f"store.root={work / 'store-plain'}"),
            work / "logs" / "store-plain.log",
        )
    arms = {name: Arm(name) for name in args.arms}
    fidelity_store = None
    for seed in args.seeds:
        if "views" in arms and not (work / f"store-views-s{seed}").exists():
            views = [f"seed={seed}", *_views_store(args, work, seed)]
            _timed(_vfmkd("precompute", config, *base, *views), work / "logs" / f"store-views-s{seed}.log")
        fidelity_store = fidelity_store or work / f"store-views-s{seed}"
        for arm in arms.values():
            run_dir = work / "runs" / f"{arm.name}-s{seed}"
            if len(run_files.read_metrics_log(str(run_dir))) != args.epochs:  # relaunched: it resumes
                overrides = _arm_overrides(args, work, arm.name, seed)
                arm.wall_s.append(
                    _timed(_vfmkd("train", config, *base, *overrides), work / "logs" / f"{run_dir.name}.log")
                )
            scores, rate = _score(run_dir, args.epochs)
            for metric, value in scores.items():
                arm.scores[metric].append(value)
            arm.rates.append(rate)
            store = {"views": f"store-views-s{seed}", "warp": "store-plain"}.get(arm.name)
            arm.store_bytes.append(_bytes(work / store) if store else 0)
    fidelity = _fidelity(args, work, fidelity_store) if fidelity_store and "views" in arms else {}
    setting = (
        f"tiny objects ({args.images} images at 128 px), YOLOv8-n + stride-4 + yolc with KD from a "
        f"YOLOv8-s run teacher ({args.teacher_epochs} epochs), yolov8 augmentation, {args.epochs} epochs "
        f"(close-mosaic {args.close_mosaic}), {len(args.seeds)} seeds, views {args.views}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"[bench] {setting}", flush=True)
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return figures(arms, fidelity, setting)


def _fidelity(args, work: Path, store: Path) -> dict:
    """``vfmkd verify --augment 16`` of one view store: the cosine of each way, per layer."""
    dataset = next(path.parent for path in store.rglob("_manifest.json"))
    teacher = work / "runs" / "teacher" / "best_model.pth"
    command = _vfmkd(
        "verify", "--store", str(dataset), "--weights", str(teacher), "--augment", "16", "--student-size", "n"
    )
    _timed(command, work / "logs" / "fidelity.log")
    report = json.loads((dataset / "augment_fidelity.json").read_text())
    return {
        layer["layer"]: {way: figures["cosine"] for way, figures in layer["ways"].items()}
        for layer in report["layers"]
    }


def figures(arms: dict[str, Arm], fidelity: dict, setting: str) -> list[Figure]:
    out = []
    baseline = arms.get("none")
    for arm in arms.values():
        for metric in METRICS:
            summary = summarize(arm.scores[metric])
            note = f"{setting}; mean {summary.mean:.4f} +/- {summary.se:.4f} (SE)"
            if baseline is not None and arm is not baseline:
                versus = compare(summary, summarize(baseline.scores[metric]))
                verdict = "exceeds 2 SE" if versus.exceeds_2se else "within 2 SE"
                note += f"; vs none {versus.diff:+.4f} +/- {versus.se:.4f} ({verdict})"
            out.append(Figure(SECTION, f"{arm.name}: val {metric}", "COCO AP", arm.scores[metric], note))
        out.append(Figure(SECTION, f"{arm.name}: training rate", "images/s", arm.rates, setting))
        out.append(
            Figure(SECTION, f"{arm.name}: store read", "MB", [b / 1e6 for b in arm.store_bytes], setting)
        )
    for layer, ways in fidelity.items():
        for way, cosine in ways.items():
            out.append(
                Figure(SECTION, f"fidelity {layer}: {way}", "cosine", [cosine], "vfmkd verify --augment 16")
            )
    return out


if __name__ == "__main__":
    from benchmarks.run_all import run_standalone

    run_standalone(run)
