"""``vfmkd verify``'s report: the store's checks (``store.verify``) and, with ``--augment N``, how exact
its targets are under augmentation (``store.augment_fidelity``), printed one line each."""

from __future__ import annotations

import argparse

from vfmkd_ray.store.augment_fidelity import measure_augment_fidelity, write_fidelity
from vfmkd_ray.store.manifest import read_manifest
from vfmkd_ray.store.verify import teacher_config, verify_store

MAX_PRINTED_PROBLEMS = 20  # the count of the rest is printed


def run_verify(args: argparse.Namespace) -> int:
    """Prints the store's checks (and, with ``--augment``, its targets' fidelity); 0 when it passes."""
    sample = args.sample if args.sample is not None else (0 if args.check_all else 8)
    if sample < 0:
        raise ValueError(f"--sample must be 0 or more, got {sample}")
    if args.augment < 0:
        raise ValueError(f"--augment must be 0 or more, got {args.augment}")
    report = verify_store(
        args.store, sample, args.weights, args.max_abs_error, args.min_cosine, check_all=args.check_all
    )
    print(f"store {report.dataset}: {report.rows} rows in {report.parts} parts")
    checks = "checksum, finite values, shape, dtype" if report.checksums else "finite values, shape, dtype"
    if not report.checksums:
        checks += "; schema version 1 has no checksums"
    print(f"rows checked: {report.rows_checked} of {report.rows} ({checks})")
    if report.sampled:
        print(
            f"teacher re-run on {report.sampled} images: abs error mean {report.mean_abs_error:.3g} "
            f"max {report.max_abs_error:.3g}, "
            f"cosine mean {report.mean_cosine:.6f} min {report.min_cosine:.6f}"
        )
    elif sample:
        print("teacher re-run on 0 images")
    for problem in report.problems[:MAX_PRINTED_PROBLEMS]:
        print(f"PROBLEM: {problem}")
    if len(report.problems) > MAX_PRINTED_PROBLEMS:
        print(f"... and {len(report.problems) - MAX_PRINTED_PROBLEMS} more")
    if args.augment and report.passed:
        _augment_fidelity(args)
    elif args.augment:
        print("targets under augmentation: not measured (the store has the problems above)")
    print("verify: OK" if report.passed else f"verify: FAILED ({len(report.problems)} problems)")
    return 0 if report.passed else 1


def _augment_fidelity(args: argparse.Namespace) -> None:
    manifest = read_manifest(args.store)
    teacher = teacher_config(manifest, args.weights)
    fidelity = measure_augment_fidelity(args.store, args.augment, teacher, student_size=args.student_size)
    print(f"targets under augmentation, {args.augment} samples of the {args.student_size} recipe:")
    for line in fidelity.lines():
        print(f"  {line}")
    measured = min((layer.samples for layer in fidelity.layers), default=0)
    if measured < args.augment:
        print(
            f"  {measured} of {args.augment} samples measured: the store holds fewer images, or MixUp "
            "samples (m/l/x recipes) were drawn, which have no warped target"
        )
    print(f"written to {write_fidelity(fidelity)}")
