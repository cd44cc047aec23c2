"""Per-group statistics of a transfer grid and the comparison with the baseline.

A group is one backbone at one mode and label fraction; its runs are the seeds that finished
(failed ones are counted, never averaged). For each metric: the mean, the sample standard deviation
(n - 1) and the standard error of the mean. The difference to the baseline's group at the same mode
and fraction has the standard error sqrt(SE_a^2 + SE_b^2) (independent seeds); a difference
"exceeds 2 SE" when its absolute value is more than twice that and both groups have 2 runs or more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CellScore:
    """One cell's outcome: its metrics when it finished, its error when it failed."""

    backbone: str
    mode: str
    label_fraction: float
    seed: int
    ok: bool
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # nan with one run
    se: float  # nan with one run


@dataclass(frozen=True)
class Comparison:
    diff: float  # mean - baseline mean
    se: float
    exceeds_2se: bool


@dataclass(frozen=True)
class Group:
    backbone: str
    mode: str
    label_fraction: float
    runs: int
    failed: int
    metrics: dict[str, Summary]
    versus_baseline: dict[str, Comparison] = field(default_factory=dict)  # empty for the baseline


def summarize(values: list[float]) -> Summary:
    finite = [v for v in values if not math.isnan(v)]
    n = len(finite)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    mean = sum(finite) / n
    if n == 1:
        return Summary(1, mean, math.nan, math.nan)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1))
    return Summary(n, mean, std, std / math.sqrt(n))


def compare(candidate: Summary, baseline: Summary) -> Comparison:
    diff = candidate.mean - baseline.mean
    se = math.hypot(candidate.se, baseline.se)
    enough = candidate.n >= 2 and baseline.n >= 2 and not math.isnan(se)
    return Comparison(diff, se, bool(enough and abs(diff) > 2 * se))


def group_scores(scores: list[CellScore], metrics: list[str], baseline: str) -> list[Group]:
    """One group per (mode, fraction, backbone) in the order first seen, each compared with the
    baseline backbone's group of the same mode and fraction when there is one."""
    keyed: dict[tuple[str, float, str], list[CellScore]] = {}
    for score in scores:
        keyed.setdefault((score.mode, score.label_fraction, score.backbone), []).append(score)
    summaries = {
        key: {m: summarize([c.metrics.get(m, math.nan) for c in cells if c.ok]) for m in metrics}
        for key, cells in keyed.items()
    }
    groups = []
    for (mode, fraction, backbone), cells in keyed.items():
        reference = summaries.get((mode, fraction, baseline))
        versus = {}
        if backbone != baseline and reference is not None:
            versus = {m: compare(summaries[(mode, fraction, backbone)][m], reference[m]) for m in metrics}
        groups.append(
            Group(
                backbone,
                mode,
                fraction,
                runs=sum(c.ok for c in cells),
                failed=sum(not c.ok for c in cells),
                metrics=summaries[(mode, fraction, backbone)],
                versus_baseline=versus,
            )
        )
    return groups
