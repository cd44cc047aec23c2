"""``vfmkd``: the command line. Each command parses a config and calls one library function."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vfmkd_ray.config import ConfigError, ExperimentConfig, load_config


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[vfmkd] %(message)s")
    try:
        if args.command == "verify":
            return _verify(args)
        if args.command == "export":
            return _export(args)
        if args.command in ("submit", "jobs"):
            return _submission(args)
        cfg = load_config(getattr(args, "config", None), args.overrides)
        return args.handler(cfg, args)
    except (ConfigError, ValueError, OSError, RuntimeError) as err:  # SubmissionError is a RuntimeError
        print(f"vfmkd {args.command}: error: {err}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vfmkd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="synthetic data -> precompute -> 2-worker distillation")
    demo.add_argument("overrides", nargs="*", help="dotted key=value overrides of configs/demo.yaml")
    demo.set_defaults(handler=_demo)
    for name, handler, text in (
        ("synth", _synth, "write the synthetic COCO dataset of data.synthetic to data.root"),
        ("precompute", _precompute, "run the teacher over the dataset into the feature store"),
        ("train", _train, "train the model (heads and feature-KD terms) with Ray Train"),
        ("eval", _eval, "per-head COCO box/mask scores and per-term teacher cosine of a run"),
        ("tune", _tune, "Ray Tune over the tune.space keys, one Ray Train run per trial (ASHA)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("config", help="experiment YAML, e.g. configs/demo.yaml")
        sub.add_argument("overrides", nargs="*", help="dotted key=value overrides")
        sub.set_defaults(handler=handler)
        if name == "eval":
            sub.add_argument("--checkpoint", help="model file (default: the run's best_model.pth)")
            sub.add_argument("--split", choices=["val", "train", "all"], default="val")
        if name == "precompute":
            sub.add_argument(
                "--teacher", action="append", help="precompute only this teacher alias (repeatable)"
            )
    export = commands.add_parser(
        "export", help="hand a distilled backbone to RT-DETRv2, MMDetection/MMYOLO, timm or ONNX"
    )
    export.add_argument(
        "--checkpoint", help="training checkpoint (dir or .pt), {'backbone': ...} file or state dict"
    )
    export.add_argument("--format", required=True, help="rtdetrv2, mmdet, mmyolo, safetensors, timm or onnx")
    export.add_argument("--out", help="where to write the export (path or URI); snippets go beside it")
    export.add_argument("--check", metavar="FILE", help="only check an existing export in --format")
    export.add_argument("--config", help="experiment YAML naming the student (default: the run's own)")
    export.add_argument("--student", help="student name instead of --config, e.g. timm/hgnetv2_b4")
    export.add_argument("--size", default="n", help="YOLOv8 size with --student yolov8_cspdarknet")
    export.add_argument("--input-size", type=int, help="ONNX input size (default: the model's, else 640)")
    export.add_argument(
        "--whole-detector",
        action="store_true",
        help="with --format mmyolo: backbone + neck + yolov8 head, as MMYOLO's YOLODetector loads it",
    )
    export.add_argument("--head", help="with --whole-detector: which yolov8 head (default: the only one)")
    submit = commands.add_parser("submit", help="run a command as a Ray job on a cluster")
    submit.add_argument(
        "--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"), help="http://HEAD:8265"
    )
    submit.add_argument("--runtime", choices=["cluster", "pip", "image"], default="cluster")
    submit.add_argument("--image", help="container image with --runtime image")
    submit.add_argument("--env", action="append", default=[], help="environment variable to pass, by name")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return")
    submit.add_argument("job", help="demo, precompute, train, tune, export or eval")
    submit.add_argument(
        "args", nargs=argparse.REMAINDER, help="the command's arguments (CONFIG key=value ...)"
    )
    jobs = commands.add_parser("jobs", help="status, logs or stop of a submitted job")
    jobs.add_argument("action", choices=["status", "logs", "stop"])
    jobs.add_argument("job_id")
    jobs.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"), help="http://HEAD:8265")
    verify = commands.add_parser("verify", help="check a feature store against its manifest and teacher")
    verify.add_argument("--store", required=True, help="dataset URI: <store.root>/<teacher>/<input_size>")
    verify.add_argument("--sample", type=int, default=8, help="stored images to re-run the teacher on")
    verify.add_argument("--weights", help="teacher checkpoint (path or URI) when not random")
    verify.add_argument("--max-abs-error", type=float, default=0.05)
    verify.add_argument("--min-cosine", type=float, default=0.999)
    return parser


def _verify(args: argparse.Namespace) -> int:
    from vfmkd_ray.store.verify import verify_store

    report = verify_store(args.store, args.sample, args.weights, args.max_abs_error, args.min_cosine)
    print(f"store {report.dataset}: {report.rows} rows in {report.parts} parts")
    print(
        f"teacher re-run on {report.sampled} images: abs error mean {report.mean_abs_error:.3g} "
        f"max {report.max_abs_error:.3g}, cosine mean {report.mean_cosine:.6f} min {report.min_cosine:.6f}"
    )
    for problem in report.problems[:20]:
        print(f"PROBLEM: {problem}")
    print("verify: OK" if report.passed else f"verify: FAILED ({len(report.problems)} problems)")
    return 0 if report.passed else 1


def _export(args: argparse.Namespace) -> int:
    from vfmkd_ray.export.command import run_check, run_export
    from vfmkd_ray.models.students import StudentConfig

    student = None
    if args.config:
        student = load_config(args.config).student
    elif args.student:
        student = StudentConfig(name=args.student, size=args.size)
    if args.check:
        report = run_check(args.check, args.format, student, args.checkpoint)
        print(report.describe())
        print("check: OK" if report.ok else "check: FAILED")
        return 0 if report.ok else 1
    if not args.checkpoint or not args.out:
        raise ValueError("export needs --checkpoint and --out (or --check FILE)")
    if args.whole_detector:
        return _export_detector(args)
    result = run_export(args.checkpoint, args.format, args.out, student, args.input_size)
    print(f"{result.student} from {result.source_kind} {args.checkpoint}")
    print(result.report.describe())
    for uri in result.files:
        print(f"wrote {uri}")
    return 0


def _export_detector(args: argparse.Namespace) -> int:
    from vfmkd_ray.export.mmyolo_detector import export_whole_detector

    if args.format != "mmyolo":
        raise ValueError(
            f"--whole-detector writes MMYOLO's YOLODetector: use --format mmyolo, not {args.format}"
        )
    result = export_whole_detector(args.checkpoint, args.out, args.head)
    print(f"yolov8 head {result.head!r} of {args.checkpoint}")
    print(result.report.describe())
    for uri in result.files:
        print(f"wrote {uri}")
    return 0


def _eval(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from vfmkd_ray.evaluation.run_eval import run_eval
    from vfmkd_ray.evaluation.table import eval_tables

    result = run_eval(cfg, args.checkpoint, args.split)
    print(f"{result.checkpoint}: {result.num_images} {result.split} images in {result.seconds:.0f}s")
    print(eval_tables(result))
    return 0


def _tune(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from vfmkd_ray.tune.runner import run_tune

    summary = run_tune(cfg)
    print(f"tune {summary.directory}: {summary.num_trials} trials, {summary.num_early_stopped} stopped early")
    print(summary.table)
    print(f"best {cfg.tune.metric} {summary.best_metric:.4f} with {summary.best_params}")
    print(f"best config: {summary.best_config}  (run it with: vfmkd train {summary.best_config})")
    return 0


def _submission(args: argparse.Namespace) -> int:
    from vfmkd_ray import submission

    if not args.address:
        raise ValueError("give --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)")
    if args.command == "jobs":
        if args.action == "status":
            status, message = submission.status(args.address, args.job_id)
            print(f"{args.job_id}: {status}{': ' + message if message else ''}")
        elif args.action == "logs":
            print(submission.logs(args.address, args.job_id), end="")
        else:
            stopped = submission.stop(args.address, args.job_id)
            print(f"{args.job_id}: {'stop requested' if stopped else 'not running'}")
        return 0
    job_id = submission.submit(args.address, args.job, args.args, args.runtime, args.image, args.env)
    if args.no_wait:
        return 0
    outcome = submission.follow(args.address, job_id)
    print(f"job {job_id}: {outcome.status}{': ' + outcome.message if outcome.message else ''}")
    return 0 if submission.succeeded(outcome) else 1


def _demo(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from vfmkd_ray.demo import run_demo

    return 0 if run_demo(cfg) else 1


def _synth(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from vfmkd_ray.data.synthetic import write_synthetic_coco

    cfg.s3.apply()
    print(f"{write_synthetic_coco(cfg.data)} images in {cfg.data.root}")
    return 0


def _precompute(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from vfmkd_ray.store.precompute import run_precompute

    for summary in run_precompute(cfg, args.teacher or None):
        print(
            f"teacher {summary.teacher}: store {summary.dataset}: {summary.row_count} rows "
            f"({summary.num_new} new, {summary.num_skipped} unreadable images skipped), "
            f"{summary.num_parts} parts, {summary.bytes / 1e6:.2f} MB in {summary.seconds:.1f}s"
        )
    return 0


def _train(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from vfmkd_ray.train.trainer import run_training

    summary = run_training(cfg)
    last = summary.history[-1] if summary.history else {}
    print(f"run {summary.run_dir}: {last.get('epoch', 0)} epochs, val loss {last.get('val/loss')}")
    print(f"best backbone: {summary.best_backbone[0]}")
    print(f"best model: {summary.best_model}")
    if summary.num_bad_samples:
        print(f"skipped {summary.num_bad_samples} bad samples: {summary.run_dir}/bad_samples.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
