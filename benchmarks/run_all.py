"""``make bench``: every benchmark on this machine -> ``benchmarks/results.json`` and ``results.md``.

    .venv/bin/python -m benchmarks.run_all [--gpu]
        [--only store training offline_online scale process_start recipe_parity augment_fidelity
                kd_under_augmentation data_plane]
        [--store-flags FLAGS] [--training-flags FLAGS] [--offline-online-flags FLAGS]
        [--json benchmarks/results.json] [--markdown benchmarks/results.md]
        [--before benchmarks/results_before.json]

Every figure is the median of repeated measurements with its min-max. ``--before`` names an
earlier results JSON (the committed one was taken before the optimisations of the performance
issue) whose medians the Markdown shows beside the current ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import ray

from benchmarks import (
    augment_fidelity,
    data_plane,
    kd_under_augmentation,
    offline_online,
    process_start,
    recipe_parity,
    scale,
    store_throughput,
    training_throughput,
)
from benchmarks.figures import Figure, this_machine

HERE = Path(__file__).resolve().parent
BENCHMARKS: dict[str, Callable[[str, list[str]], list[Figure]]] = {
    "store": store_throughput.run,
    "training": training_throughput.run,
    "offline_online": offline_online.run,
    "scale": scale.run,
    "process_start": process_start.run,
    "recipe_parity": recipe_parity.run,
    "augment_fidelity": augment_fidelity.run,
    "kd_under_augmentation": kd_under_augmentation.run,
    "data_plane": data_plane.run,
}
SECTION_ORDER = [
    store_throughput.SECTION,
    training_throughput.SECTION,
    offline_online.SECTION,
    scale.SECTION,
    process_start.SECTION,
    recipe_parity.SECTION,
    augment_fidelity.SECTION,
    kd_under_augmentation.SECTION,
    data_plane.SECTION,
]
MODULES = {
    "store": "store_throughput",
    "training": "training_throughput",
    "offline_online": "offline_online",
    "scale": "scale",
    "process_start": "process_start",
    "recipe_parity": "recipe_parity",
    "augment_fidelity": "augment_fidelity",
    "kd_under_augmentation": "kd_under_augmentation",
    "data_plane": "data_plane",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpu", action="store_true", help="train and run teachers on the GPU")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--markdown", type=Path, default=HERE / "results.md")
    parser.add_argument("--before", type=Path, default=HERE / "results_before.json")
    for name in BENCHMARKS:
        parser.add_argument(
            f"--{name.replace('_', '-')}-flags",
            default="",
            metavar="FLAGS",
            help=f'flags for benchmarks/{MODULES[name]}.py, e.g. "--repeats 5"',
        )
    args = parser.parse_args()
    quiet_ray()
    machine = this_machine()
    print(f"[bench] {machine.describe()}", flush=True)
    started = time.monotonic()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as root:
        for name in args.only:
            print(f"[bench] {name} ...", flush=True)
            began = time.monotonic()
            flags = shlex.split(getattr(args, f"{name}_flags")) + (["--gpu"] if args.gpu else [])
            figures += BENCHMARKS[name](f"{root}/{name}", flags)
            print(f"[bench] {name} done in {time.monotonic() - began:.0f} s", flush=True)
    ray.shutdown()
    run = {
        "command": f"python -m benchmarks.run_all {shlex.join(sys.argv[1:])}".strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "sections": sorted({figure.section for figure in figures}),
    }
    report = merged(args.json, machine.__dict__, run, [figure.to_json() for figure in figures])
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    before = (
        json.loads(args.before.read_text()) if args.before.exists() and args.before != args.json else None
    )
    args.markdown.write_text(markdown(report, before))
    print_figures(figures)
    print(f"[bench] wrote {args.json} and {args.markdown}")


def merged(path: Path, machine: dict, run: dict, figures: list[dict]) -> dict:
    """This run's figures; with ``--only``, the other sections of the results already at ``path``
    are kept, with the runs that produced them (each listing the sections still its own), when they
    come from the same kind of machine (its accelerator and CPU count: a rebuilt kernel or a newer
    torch is the same kind). Each run keeps the machine it ran on."""
    run = run | {"machine": machine}
    kept_runs, kept_figures = [], []
    if path.exists():
        earlier = json.loads(path.read_text())
        if _kind(earlier.get("machine", {})) == _kind(machine):
            kept_figures = [f for f in earlier["figures"] if f["section"] not in run["sections"]]
            kept_sections = {f["section"] for f in kept_figures}
            kept_runs = [  # each naming only the sections whose figures are still its own
                {"machine": earlier.get("machine", {})}
                | r
                | {"sections": [s for s in r["sections"] if s in kept_sections]}
                for r in earlier["runs"]
                if kept_sections & set(r["sections"])
            ]
    return {"machine": machine, "runs": [*kept_runs, run], "figures": kept_figures + figures}


def _kind(machine: dict) -> tuple:
    return machine.get("accelerator"), machine.get("cpus")


def quiet_ray() -> None:
    """Progress bars and per-operator logs of Ray Data would bury the benchmark's own lines (the
    context's settings also reach a split's coordinator actor, which prints each execution's start)."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def markdown(report: dict, before: dict | None) -> str:
    machine = report["machine"]
    old = {(f["section"], f["name"]): f for f in before["figures"]} if before else {}
    lines = ["# Benchmark results", ""]
    for run in report["runs"]:
        sections = ", ".join(run["sections"])
        ran_on = run.get("machine", machine)
        software = (
            f" (torch {ran_on.get('torch')}, Python {ran_on.get('python')}, Ray {ran_on.get('ray')}, "
            f"{ran_on.get('platform')})"
            if ran_on != machine
            else ""
        )
        lines.append(f"- `{run['command']}` on {run['date']}, {run['minutes']} min: {sections}{software}")
    lines += [
        "",
        f"Machine: {machine['accelerator']}; {machine['cpus']} CPUs; {machine['platform']}; "
        f"Python {machine['python']}, torch {machine['torch']}, Ray {machine['ray']} (a run that "
        "names its software ran on the same kind of machine with that).",
        "",
        "Each figure: median of the repeated measurements, min-max in brackets, n = their count.",
    ]
    if before:
        commands = "; ".join(f"`{run['command']}` on {run['date']}" for run in before["runs"])
        lines.append(f"'Before' is the median from {commands}.")
    for section in sorted({f["section"] for f in report["figures"]}, key=SECTION_ORDER.index):
        lines += ["", f"## {section}", ""]
        header = "| figure | median (min-max) | unit | n | target |" + (" before |" if before else "")
        lines += [header + " note |", "|" + "---|" * (7 if before else 6)]
        for f in (f for f in report["figures"] if f["section"] == section):
            row = (
                f"| {f['name']} | {_number(f['median'])} ({_number(f['min'])}-{_number(f['max'])}) "
                f"| {f['unit']} | {len(f['values'])} | {f['target'] or '-'} |"
            )
            if before:
                previous = old.get((section, f["name"]))
                row += f" {_number(previous['median']) if previous else '-'} |"
            lines.append(f"{row} {f['note']} |")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def print_figures(figures: list[Figure]) -> None:
    for f in figures:
        spread = f"{_number(f.low)}-{_number(f.high)}"
        target = f"  target {f.target}" if f.target else ""
        median = f"{_number(f.median)} {f.unit}"
        print(f"[bench] {f.section}: {f.name}: {median} ({spread}, n={len(f.values)}){target}")


def run_standalone(run: Callable[[str, list[str]], list[Figure]]) -> None:
    """``python -m benchmarks.<one>``: that benchmark alone, printed, nothing written."""
    quiet_ray()
    print(f"[bench] {this_machine().describe()}", flush=True)
    with tempfile.TemporaryDirectory() as root:
        print_figures(run(root, sys.argv[1:]))


if __name__ == "__main__":
    main()
