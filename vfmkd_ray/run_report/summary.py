"""``vfmkd report RUN``: a run's summary table from its ``metrics.csv`` and its ``curves.png``,
for a run directory on a local path or object storage."""

from __future__ import annotations

from dataclasses import dataclass

from vfmkd_ray import run_files, storage
from vfmkd_ray.run_report.curves import curves_png

# Which way is better, by the metric's family; others (the learning rate, counts) have no best.
LOWER_IS_BETTER = ("train/loss", "val/loss", "seconds", "memory/")
HIGHER_IS_BETTER = ("train/cos", "val/cos", "throughput/")
ORDER = ("val/", "train/", "lr", "throughput/", "seconds", "memory/", "data/")
NOT_SHOWN = ("epoch", "step")


@dataclass(frozen=True)
class RunReport:
    run_dir: str
    epochs: int
    steps: int
    table: str
    curves: str  # where the plot was written


def report_run(run_dir: str, out: str | None = None) -> RunReport:
    """Reads ``metrics.csv`` of ``run_dir``; writes the curves to ``out`` (default: the run's own
    ``curves.png``, refreshed)."""
    run_dir = storage.absolute(run_dir.rstrip("/"))
    history = run_files.read_metrics_table(run_dir)
    if not history:
        raise run_files.RunFileError(f"{run_files.path(run_dir, run_files.METRICS_CSV)} holds no epoch")
    png = curves_png(history, title=run_dir.rsplit("/", 1)[-1])
    if out:
        target = storage.absolute(out)
        storage.write_bytes_atomic(target, png)
    else:
        target = run_files.write_curves(run_dir, png)
    last = history[-1]
    return RunReport(
        run_dir=run_dir,
        epochs=int(last.get("epoch", len(history))),
        steps=int(last.get("step", 0)),
        table=summary_table(history),
        curves=target,
    )


def summary_table(history: list[dict[str, float]]) -> str:
    """One row per metric: its first and last epoch's value, and its best with the epoch."""
    keys = sorted({k for r in history for k in r if k not in NOT_SHOWN}, key=_rank)
    rows = [("metric", "first", "best (epoch)", "last")]
    for key in keys:
        series = [(int(r.get("epoch", i + 1)), r[key]) for i, r in enumerate(history) if key in r]
        first, last = series[0][1], series[-1][1]
        rows.append((key, f"{first:.4g}", _best(key, series), f"{last:.4g}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _best(key: str, series: list[tuple[int, float]]) -> str:
    if key.startswith(LOWER_IS_BETTER):
        epoch, value = min(series, key=lambda p: p[1])
    elif key.startswith(HIGHER_IS_BETTER):
        epoch, value = max(series, key=lambda p: p[1])
    else:
        return "-"
    return f"{value:.4g} ({epoch})"


def _rank(key: str) -> tuple[int, str]:
    for position, prefix in enumerate(ORDER):
        if key.startswith(prefix):
            return position, key
    return len(ORDER), key
