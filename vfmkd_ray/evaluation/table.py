"""``vfmkd eval``'s printed tables: one per head kind, then the feature terms."""

from __future__ import annotations

import math

from vfmkd_ray.evaluation.run_eval import EvalResult

BOX_COLUMNS = ("mAP", "AP50", "AP_small")
MASK_COLUMNS = ("mIoU", "segm_mAP", "segm_AP50", "instances")


def eval_tables(result: EvalResult) -> str:
    lines: list[str] = []
    for columns in (BOX_COLUMNS, MASK_COLUMNS):
        rows = [
            (head, mode, metrics)
            for head, modes in result.heads.items()
            for mode, metrics in modes.items()
            if columns[0] in metrics
        ]
        if rows:
            lines += [f"| head | inference | {' | '.join(columns)} |", "|---|---|" + "---|" * len(columns)]
            lines += [
                f"| {head} | {mode} | " + " | ".join(_number(metrics[c]) for c in columns) + " |"
                for head, mode, metrics in rows
            ]
            lines.append("")
    if result.cosine:
        lines += ["| feature term | teacher cosine | loss |", "|---|---|---|"]
        lines += [
            f"| {t} | {c:.4f} | {result.losses.get(t, float('nan')):.4f} |" for t, c in result.cosine.items()
        ]
    return "\n".join(lines).rstrip()


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"  # e.g. AP_small of a split without small objects
    return f"{value:.0f}" if float(value).is_integer() and value > 1 else f"{value:.4f}"
