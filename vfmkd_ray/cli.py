"""``vfmkd``: the command line. Each command parses a config and calls one library function."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from vfmkd_ray import api
from vfmkd_ray.config import ConfigError, ExperimentConfig, load_config
from vfmkd_ray.console import Console, console


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with console(args.command, args.verbose) as out, _sigterm_exits():
        try:
            return _run(args, out)
        finally:
            # With a diverted console, Ray's last words go to its log too (if Ray was used at all).
            if out.log_path is not None and "vfmkd_ray.ray_session" in sys.modules:
                sys.modules["vfmkd_ray.ray_session"].stop_ray_started_here()


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM (``vfmkd jobs stop``, a scheduler's kill) ends the command like an exit, so that what
    it holds is released (the run's lease) and its cleanup runs; Ray sets the same once it starts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, out: Console) -> int:
    """The command, with every way it can end told to the person in one line."""
    cfg = None
    try:
        if args.command == "verify":
            return _verify(args)
        if args.command == "export":
            return _export(args)
        if args.command in ("submit", "jobs"):
            return _submission(args)
        if args.command == "report":
            return _report(args)
        cfg = load_config(getattr(args, "config", None), args.overrides)
        return args.handler(cfg, args)
    except (ConfigError, ValueError, OSError, RuntimeError) as err:  # SubmissionError is a RuntimeError
        out.error(f"vfmkd {args.command}: error: {err}", with_traceback=True)
        return 2
    except KeyboardInterrupt:
        out.error(f"vfmkd {args.command}: interrupted. {_what_was_saved(args, cfg)}")
        return 130
    except Exception as err:  # a bug of ours
        out.error(f"vfmkd {args.command}: unexpected {type(err).__name__}: {err}", with_traceback=True)
        return 3


def build_parser() -> argparse.ArgumentParser:
    """Every command and its flags (the README and docs show them: tests/test_docs_commands.py)."""
    parser = argparse.ArgumentParser(prog="vfmkd", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", help="show Ray's own output on the terminal (or VFMKD_VERBOSE=1)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", parents=[common], help="synthetic data -> precompute -> 2-worker distillation"
    )
    demo.add_argument("overrides", nargs="*", help="dotted key=value overrides of configs/demo.yaml")
    demo.set_defaults(handler=_demo)
    for name, handler, text in (
        ("synth", _synth, "write the synthetic COCO dataset of data.synthetic to data.root"),
        ("precompute", _precompute, "run the teacher over the dataset into the feature store"),
        ("train", _train, "train the model (heads and feature-KD terms) with Ray Train"),
        ("eval", _eval, "per-head COCO box/mask scores and per-term teacher cosine of a run"),
        ("tune", _tune, "Ray Tune over the tune.space keys, one Ray Train run per trial (ASHA)"),
        ("transfer", _transfer, "fine-tune the heads from each backbone: does distillation help?"),
    ):
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("config", help="experiment YAML, e.g. configs/demo.yaml")
        sub.add_argument("overrides", nargs="*", help="dotted key=value overrides")
        sub.set_defaults(handler=handler)
        if name == "eval":
            sub.add_argument("--checkpoint", help="model file (default: the run's best_model.pth)")
            sub.add_argument("--split", choices=["val", "train", "all"], default="val")
        if name == "transfer":
            sub.add_argument(
                "--backbones",
                nargs="+",
                required=True,
                metavar="NAME=URI",
                help="backbones to compare (a run's best_backbone.safetensors, a backbone file, or "
                "NAME=random); put key=value overrides before --backbones",
            )
        if name == "precompute":
            sub.add_argument(
                "--teacher", action="append", help="precompute only this teacher alias (repeatable)"
            )
    export = commands.add_parser(
        "export",
        parents=[common],
        help="hand a distilled backbone to RT-DETRv2, MMDetection/MMYOLO, timm or ONNX",
    )
    export.add_argument(
        "--checkpoint",
        help="training checkpoint (dir or .pt), {'backbone': ...} file, state dict (the student's or a "
        "plain timm model's) or MMEngine checkpoint (MMYOLO, MMDetection: its backbone.*)",
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
    export.add_argument(
        "--freeze-at",
        type=int,
        metavar="N",
        help="backbone freezing in the snippet: -1 nothing, 0 the stem, N the stem and N stages "
        "(rtdetrv2 freeze_at, default 0 as its recipe; mmdet/mmyolo YOLOv8 frozen_stages, default -1)",
    )
    export.add_argument(
        "--freeze-norm",
        type=str.lower,
        choices=["true", "false"],
        help="rtdetrv2 freeze_norm (FrozenBatchNorm2d; default true as its recipe), mmdet/mmyolo YOLOv8 "
        "norm_eval (default false)",
    )
    report = commands.add_parser(
        "report", parents=[common], help="a run's summary table from its metrics.csv, and its curves.png"
    )
    report.add_argument("run", help="run directory: <train.storage_path>/<name>, a local path or s3:// URI")
    report.add_argument("--out", help="where to write the plot (default: the run's own curves.png)")
    submit = commands.add_parser("submit", parents=[common], help="run a command as a Ray job on a cluster")
    submit.add_argument(
        "--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"), help="http://HEAD:8265"
    )
    submit.add_argument("--runtime", choices=["cluster", "pip", "image"], default="cluster")
    submit.add_argument("--image", help="container image with --runtime image")
    submit.add_argument("--env", action="append", default=[], help="environment variable to pass, by name")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return")
    submit.add_argument("job", help="demo, precompute, train, tune, transfer, export or eval")
    submit.add_argument(
        "args", nargs=argparse.REMAINDER, help="the command's arguments (CONFIG key=value ...)"
    )
    jobs = commands.add_parser("jobs", parents=[common], help="status, logs or stop of a submitted job")
    jobs.add_argument("action", choices=["status", "logs", "stop"])
    jobs.add_argument("job_id")
    jobs.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"), help="http://HEAD:8265")
    verify = commands.add_parser(
        "verify",
        parents=[common],
        help="check a feature store against its manifest, its row checksums and its teacher",
    )
    verify.add_argument("--store", required=True, help="dataset URI: <store.root>/<teacher>/<input_size>")
    verify.add_argument(
        "--all",
        action="store_true",
        dest="check_all",
        help="check every row's checksum, finite values, shape and dtype (builds no teacher)",
    )
    verify.add_argument(
        "--sample", type=int, help="stored images to re-run the teacher on (default 8; 0 with --all)"
    )
    verify.add_argument("--weights", help="teacher checkpoint (path or URI) when not random")
    verify.add_argument("--max-abs-error", type=float, default=0.05)
    verify.add_argument("--min-cosine", type=float, default=0.999)
    verify.add_argument(
        "--augment",
        type=int,
        default=0,
        metavar="N",
        help="also draw N augmented (mosaic) samples and measure how exact each target is against the "
        "live teacher on the augmented canvas; written as augment_fidelity.json next to the store",
    )
    verify.add_argument(
        "--student-size",
        default="s",
        choices=["n", "s", "m", "l", "x"],
        help="the YOLOv8 size whose augmentation --augment draws (n/s/m/l/x)",
    )
    return parser


def _verify(args: argparse.Namespace) -> int:
    from vfmkd_ray.store.verify_command import run_verify

    return run_verify(args)


def _export(args: argparse.Namespace) -> int:
    from vfmkd_ray.handoff.command import run_check
    from vfmkd_ray.handoff.snippets import Freeze
    from vfmkd_ray.models.students import StudentConfig

    student = None
    if args.config:
        student = load_config(args.config).student
    elif args.student:
        if not StudentConfig(name=args.student).family.described_by_name:
            raise ValueError(
                f"--student {args.student}: an mm/ student is its backbone dict too (student.mm); give a "
                "config that holds it with --config, or export from a run's files (their resolved config)"
            )
        student = StudentConfig(name=args.student, size=args.size)
    freeze = Freeze(args.freeze_at, None if args.freeze_norm is None else args.freeze_norm == "true")
    if freeze.given and (args.check or args.whole_detector):
        raise ValueError(
            "--freeze-at/--freeze-norm set the backbone snippet of an export, not --check or --whole-detector"
        )
    if args.check:
        report = run_check(args.check, args.format, student, args.checkpoint)
        print(report.describe())
        print("check: OK" if report.ok else "check: FAILED")
        return 0 if report.ok else 1
    if not args.checkpoint or not args.out:
        raise ValueError("export needs --checkpoint and --out (or --check FILE)")
    if args.whole_detector:
        return _export_detector(args)
    result = api.export(
        checkpoint=args.checkpoint,
        format=args.format,
        out=args.out,
        student=student,
        input_size=args.input_size,
        freeze=freeze,
    )
    print(f"{result.student} from {result.source_kind} {args.checkpoint}")
    print(result.weights.describe())
    print(result.report.describe())
    for uri in result.files:
        print(f"wrote {uri}")
    return 0


def _export_detector(args: argparse.Namespace) -> int:
    from vfmkd_ray.handoff.mmyolo_detector import export_whole_detector

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


def _report(args: argparse.Namespace) -> int:
    from vfmkd_ray.run_report.summary import report_run

    report = report_run(args.run, args.out)
    print(f"run {report.run_dir}: {report.epochs} epochs, {report.steps} steps")
    print(report.table)
    print(f"curves: {report.curves}")
    return 0


def _eval(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from vfmkd_ray.evaluation.table import eval_tables

    result = api.evaluate(cfg, checkpoint=args.checkpoint, split=args.split)
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


def _transfer(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from vfmkd_ray.transfer.runner import run_transfer

    summary = run_transfer(cfg, args.backbones)
    reused = f", {summary.num_reused} reused from an earlier launch" if summary.num_reused else ""
    print(f"transfer {summary.directory}: {summary.num_cells} cells, {summary.num_failed} failed{reused}")
    print(summary.table)
    for uri in summary.files:
        print(f"wrote {uri}")
    return 0 if summary.num_failed == 0 else 1


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
    from vfmkd_ray.locations import check_locations

    cfg.s3.apply()
    check_locations(cfg, writes=("data.root",))
    print(f"{write_synthetic_coco(cfg.data)} images in {cfg.data.root}")
    return 0


def _precompute(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    for summary in api.precompute(cfg, teachers=args.teacher or None):
        print(
            f"teacher {summary.teacher}: store {summary.dataset}: {summary.row_count} rows "
            f"({summary.num_new} new, {summary.num_skipped} unreadable images skipped), "
            f"{summary.num_parts} parts, {summary.bytes / 1e6:.2f} MB in {summary.seconds:.1f}s"
        )
    return 0


def _train(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    summary = api.train(cfg).summary
    assert summary is not None  # train's Run carries its summary
    last = summary.history[-1] if summary.history else {}
    print(f"run {summary.run_dir}: {last.get('epoch', 0)} epochs, val loss {last.get('val/loss')}")
    if summary.best_backbone is None or summary.best_model is None:
        print(f"best backbone: none written (no epoch improved {cfg.train.best_metric})")
    else:
        print(f"best backbone: {summary.best_backbone[0]}")
        print(f"best model: {summary.best_model}")
    if summary.num_bad_samples:
        print(f"skipped {summary.num_bad_samples} bad samples: {summary.run_dir}/bad_samples.jsonl")
    if summary.num_dropped_boxes:
        print(
            f"dropped {summary.num_dropped_boxes} degenerate boxes (no area inside the image, or not "
            f"finite) from the annotations: {summary.run_dir}/bad_samples.jsonl"
        )
    return 0


def _what_was_saved(args: argparse.Namespace, cfg: ExperimentConfig | None) -> str:
    """After Ctrl-C: what is on disk and the command that carries on from it."""
    if cfg is None:
        return "Nothing was started."
    try:
        return _saved_by(args, cfg)
    except (OSError, ValueError):  # storage gone too: say what is known without it
        return "Run the same command to carry on from what was saved."


def _saved_by(args: argparse.Namespace, cfg: ExperimentConfig) -> str:
    from vfmkd_ray import run_files
    from vfmkd_ray.store.manifest import teacher_dataset
    from vfmkd_ray.store.parts import list_parts

    if args.command == "precompute":
        stores = [teacher_dataset(cfg, alias) for alias in args.teacher or cfg.teachers]
        held = ", ".join(f"{len(list_parts(uri))} parts in {uri}" for uri in stores)
        return f"Every finished part is kept ({held}); the same command resumes, skipping stored images."
    if args.command == "train":
        run_dir = run_files.run_dir_of(cfg)
        if epochs := len(run_files.read_metrics_log(run_dir)):
            return (
                f"{run_dir} holds the checkpoint of epoch {epochs}; run the same command to resume from it."
            )
        return "No epoch had finished, so there is no checkpoint; the same command starts the run again."
    if args.command == "tune":
        return "Finished trials are kept; run the same command to resume the search."
    if args.command == "transfer":
        return "Finished cells are kept; run the same command to reuse them and carry on."
    return "Run the same command to start again."


if __name__ == "__main__":
    sys.exit(main())
