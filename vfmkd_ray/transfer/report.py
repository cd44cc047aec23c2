"""What ``vfmkd transfer`` writes into its directory: ``transfer.csv`` (one row per cell, failed
ones with their error), ``transfer.md`` (per group mean ± std, the difference to the baseline and
whether it exceeds two standard errors, the probe, the failed cells) and ``transfer.png``."""

from __future__ import annotations

import csv
import io
import math

from vfmkd_ray import storage
from vfmkd_ray.transfer.statistics import CellScore, Group, Summary

TRANSFER_CSV = "transfer.csv"
TRANSFER_MD = "transfer.md"
TRANSFER_PNG = "transfer.png"
TABLE_METRICS = ("mAP", "AP_small", "mIoU")  # the table's columns, per head; the CSV has every metric


def table_metrics(scores: list[CellScore]) -> list[str]:
    """The metrics the table compares: each head's mAP, AP_small and mIoU, in a stable order."""
    names = {m for s in scores for m in s.metrics}
    return sorted((m for m in names if m.rsplit("/", 1)[-1] in TABLE_METRICS), key=_metric_order)


def write_report(
    directory: str,
    title: str,
    scores: list[CellScore],
    groups: list[Group],
    metrics: list[str],
    baseline: str,
    notes: list[str],
) -> str:
    """Writes the three files; returns the markdown."""
    storage.write_text_atomic(storage.join(directory, TRANSFER_CSV), cells_csv(scores))
    text = markdown(title, groups, metrics, baseline, notes, [s for s in scores if not s.ok])
    storage.write_text_atomic(storage.join(directory, TRANSFER_MD), text)
    storage.write_bytes_atomic(storage.join(directory, TRANSFER_PNG), plot(groups, metrics))
    return text


def cells_csv(scores: list[CellScore]) -> str:
    metric_names = sorted({m for s in scores for m in s.metrics}, key=_metric_order)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["backbone", "mode", "label_fraction", "seed", "status", *metric_names, "error"])
    for s in scores:
        values = [_csv_number(s.metrics.get(m, math.nan)) for m in metric_names]
        writer.writerow(
            [s.backbone, s.mode, s.label_fraction, s.seed, "ok" if s.ok else "failed", *values, s.error or ""]
        )
    return buffer.getvalue()


def markdown(
    title: str,
    groups: list[Group],
    metrics: list[str],
    baseline: str,
    notes: list[str],
    failed: list[CellScore],
) -> str:
    lines = [f"# {title}", "", *notes, ""]
    lines += [
        f"Each entry: mean ± standard deviation over the seeds that finished. Δ: the difference to "
        f"`{baseline}` at the same mode and label budget ± its standard error; **> 2 SE** marks a "
        "difference larger than two standard errors (both groups with 2 runs or more).",
        "",
    ]
    header = ["mode", "labels", "backbone", "runs"]
    for metric in metrics:
        header += [metric, f"Δ {metric}"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        runs = f"{group.runs}" + (f" ({group.failed} failed)" if group.failed else "")
        row = [group.mode, f"{group.label_fraction:.0%}", group.backbone, runs]
        for metric in metrics:
            row.append(_mean_std(group.metrics[metric]))
            row.append(_versus(group, metric))
        lines.append("| " + " | ".join(row) + " |")
    if failed:
        lines += ["", "Failed cells (relaunch the same command to retry them):", ""]
        lines += [f"- {s.backbone} {s.mode} {s.label_fraction:g} seed {s.seed}: {s.error}" for s in failed]
    return "\n".join(lines) + "\n"


def plot(groups: list[Group], metrics: list[str]) -> bytes:
    """One panel per metric: mean ± std against the label budget, one line per backbone and mode."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = max(1, len(metrics))
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), squeeze=False)
    lines: dict[tuple[str, str], list[Group]] = {}
    for group in groups:
        lines.setdefault((group.backbone, group.mode), []).append(group)
    for axis, metric in zip(axes[0], metrics, strict=False):
        for (backbone, mode), members in lines.items():
            members = sorted(members, key=lambda g: g.label_fraction)
            x = [g.label_fraction for g in members]
            y = [g.metrics[metric].mean for g in members]
            err = [0.0 if math.isnan(g.metrics[metric].std) else g.metrics[metric].std for g in members]
            axis.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{backbone} ({mode})")
        axis.set_xscale("log")
        axis.set_xlabel("label fraction")
        axis.set_title(metric)
    if lines and metrics:
        axes[0][0].legend(fontsize=7)
    else:
        axes[0][0].text(0.5, 0.5, "no cell has finished", ha="center", va="center")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _versus(group: Group, metric: str) -> str:
    comparison = group.versus_baseline.get(metric)
    if comparison is None or math.isnan(comparison.diff):
        return ""
    se = "" if math.isnan(comparison.se) else f" ± {comparison.se:.4f}"
    return f"{comparison.diff:+.4f}{se}" + (" **> 2 SE**" if comparison.exceeds_2se else "")


def _mean_std(summary: Summary) -> str:
    if summary.n == 0:
        return "n/a"
    return f"{summary.mean:.4f}" + ("" if math.isnan(summary.std) else f" ± {summary.std:.4f}")


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _metric_order(name: str) -> tuple[str, int, str]:
    head, _, metric = name.rpartition("/")
    order = TABLE_METRICS.index(metric) if metric in TABLE_METRICS else len(TABLE_METRICS)
    return head, order, metric
